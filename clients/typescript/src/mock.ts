// The rule-based mock the Python client answers with in development and test when no URL is set
// (`suggestions/backends/mock.py`): the same rule table, streamed word by word, and suggestions
// from the same word diff (`suggestions/diff.py`), so a page built against the mock sees what it
// would see from the Python side. A test checks both give the same answers on our eval set.
import type { LlamaRequest, LlamaResponse, LlamaSuggestion } from "./contract.ts";

type SuggestionType = LlamaRequest["type"];
const ALL: readonly SuggestionType[] = ["grammar", "clarity", "style"];
const EDITING: readonly SuggestionType[] = ["clarity", "style"];
const STYLE: readonly SuggestionType[] = ["style"];

// Python's \w and \b are Unicode-aware; JavaScript's are ASCII even with the `u` flag.
const WORD = String.raw`[\p{L}\p{N}_]`;
const unicodeRegex = (pattern: string): RegExp =>
  new RegExp(
    pattern
      .replaceAll(String.raw`\b`, `(?:(?<=${WORD})(?!${WORD})|(?<!${WORD})(?=${WORD}))`)
      .replaceAll(String.raw`\w`, WORD),
    "giu",
  );

interface Rule {
  pattern: RegExp;
  replacement: string;
  types: readonly SuggestionType[];
}

const rule = (pattern: string, replacement: string, types: readonly SuggestionType[]): Rule => ({
  pattern: unicodeRegex(pattern),
  replacement,
  types,
});

// Replacements use JavaScript's `$1` where the Python table says `\1`.
const RULES: readonly Rule[] = [
  rule(String.raw`\bgo to (\w+) yesterday\b`, "went to $1 yesterday", ALL),
  rule(String.raw`\bbuyed\b`, "bought", ALL),
  rule(String.raw`\bbringed\b`, "brought", ALL),
  rule(String.raw`\bteached\b`, "taught", ALL),
  rule(String.raw`\ba (books|friends|apples|letters|days|things|people)\b`, "$1", ALL),
  rule(String.raw`\b(he|she|it) (don't)\b`, "$1 doesn't", ALL),
  rule(String.raw`\b(he|she|it) (go|want|need|like|say)\b`, "$1 $2s", ALL),
  rule(String.raw`\b(could|should|would) of\b`, "$1 have", ALL),
  rule(String.raw`\balot\b`, "a lot", ALL),
  rule(String.raw`\bdont\b`, "don't", ALL),
  rule(String.raw`\bcant\b`, "can't", ALL),
  rule(String.raw`\brecieve`, "receive", ALL),
  rule(String.raw`\bseperate`, "separate", ALL),
  rule(String.raw`\bdefinately\b`, "definitely", ALL),
  rule(String.raw`\btheir (is|are|was|were)\b`, "there $1", ALL),
  rule(String.raw`\byour (welcome|right)\b`, "you're $1", ALL),
  rule(String.raw`\bi\b`, "I", ALL),
  rule(String.raw`(?<=\w) {2,}(?=\w)`, " ", ALL),
  rule(String.raw`\bin order to\b`, "to", EDITING),
  rule(String.raw`\bdue to the fact that\b`, "because", EDITING),
  rule(String.raw`\bat this point in time\b`, "now", EDITING),
  rule(String.raw`\bin the event that\b`, "if", EDITING),
  rule(String.raw`\bfor the purpose of\b`, "for", EDITING),
  rule(String.raw`\bhas the ability to\b`, "can", EDITING),
  rule(String.raw`\bit is important to note that\s+`, "", EDITING),
  rule(String.raw`\bbasically,?\s+`, "", EDITING),
  rule(String.raw`\bvery (big|large)\b`, "enormous", STYLE),
  rule(String.raw`\bvery (small|little)\b`, "tiny", STYLE),
  rule(String.raw`\bvery (good|nice)\b`, "excellent", STYLE),
  rule(String.raw`\bvery (bad)\b`, "terrible", STYLE),
  rule(String.raw`\bvery (tired)\b`, "exhausted", STYLE),
  rule(String.raw`\bvery (happy)\b`, "delighted", STYLE),
  rule(String.raw`\bvery (scared|afraid)\b`, "terrified", STYLE),
  rule(String.raw`\breally\s+`, "", STYLE),
  rule(String.raw`\ba lot of\b`, "many", STYLE),
  rule(String.raw`\bwalked quickly\b`, "hurried", STYLE),
  rule(String.raw`\bsaid loudly\b`, "shouted", STYLE),
  rule(String.raw`\ba ([aeio]\w*)\b`, "an $1", ALL), // last: it also sees the words put in above
];

/** The passage as the mock revises it. */
export function revise(text: string, type: SuggestionType): string {
  let revised = text;
  for (const { pattern, replacement, types } of RULES) {
    if (!types.includes(type)) continue;
    revised = revised.replace(pattern, (match: string, ...groups: unknown[]) => {
      const expanded = replacement.replace(/\$(\d)/g, (_, n: string) => {
        const group = groups[Number(n) - 1];
        return typeof group === "string" ? group : "";
      });
      const first = expanded.slice(0, 1);
      return isUpper(match.slice(0, 1)) && isLower(first)
        ? first.toUpperCase() + expanded.slice(1)
        : expanded;
    });
  }
  return revised;
}

const isUpper = (c: string): boolean => c !== "" && c === c.toUpperCase() && c !== c.toLowerCase();
const isLower = (c: string): boolean => c !== "" && c === c.toLowerCase() && c !== c.toUpperCase();

/** The mock's answer as the words it streams, then the response. */
export function mockAnswer(
  request: LlamaRequest,
  backend: string,
): { words: string[]; response: Omit<LlamaResponse, "latency_ms" | "time_to_first_token_ms"> } {
  const revised = revise(request.text, request.type);
  const words = revised.match(/\S+\s*|\s+/gu) ?? [];
  return {
    words,
    response: {
      backend,
      model_id: "mock",
      revised_text: revised,
      suggestions: diffSuggestions(request.text, revised, request.type),
      usage: {
        prompt_tokens: countWords(request.text),
        completion_tokens: words.length,
        total_tokens: countWords(request.text) + words.length,
        estimated: true,
      },
      cached: false,
    },
  };
}

const countWords = (text: string): number => (text.match(/\S+/gu) ?? []).length;

// -- the word diff ----------------------------------------------------------------------------

const TOKEN = /\s+|[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s]/gu;

export function tokenize(text: string): string[] {
  return text.match(TOKEN) ?? [];
}

/** The edits that turn `original` into `revised`, with offsets in code points (as the API's). */
export function diffSuggestions(
  original: string,
  revised: string,
  type: SuggestionType,
): LlamaSuggestion[] {
  const source = tokenize(original);
  const target = tokenize(revised);
  const offsets = [0];
  for (const token of source) offsets.push(offsets[offsets.length - 1]! + [...token].length);
  const spans: [number, number, number, number][] = [];
  for (const [i1, i2, j1, j2] of changes(source, target)) {
    const last = spans[spans.length - 1];
    if (last && source.slice(last[1], i1).every((t) => t.trim() === "")) {
      last[1] = i2; // only whitespace between two edits: one suggestion
      last[3] = j2;
      continue;
    }
    spans.push([i1, i2, j1, j2]);
  }
  return spans.map((span) => {
    let [i1, i2, j1, j2] = span;
    while (i1 < i2 && j1 < j2 && source[i2 - 1] === target[j2 - 1]) (i2 -= 1), (j2 -= 1);
    while (i1 < i2 && j1 < j2 && source[i1] === target[j1]) (i1 += 1), (j1 += 1);
    return {
      original: source.slice(i1, i2).join(""),
      replacement: target.slice(j1, j2).join(""),
      start: offsets[i1]!,
      end: offsets[i2]!,
      type,
    };
  });
}

/** Ranges that differ: the common prefix and suffix first, as rapidfuzz's Indel opcodes take
 * them (so a repeated word pairs as it does in Python), then a longest common subsequence of
 * the middle, walked back from its end. */
function changes(all: string[], allB: string[]): [number, number, number, number][] {
  let prefix = 0;
  while (prefix < all.length && prefix < allB.length && all[prefix] === allB[prefix]) prefix += 1;
  let suffix = 0;
  while (
    suffix < all.length - prefix &&
    suffix < allB.length - prefix &&
    all[all.length - 1 - suffix] === allB[allB.length - 1 - suffix]
  ) {
    suffix += 1;
  }
  const a = all.slice(prefix, all.length - suffix);
  const b = allB.slice(prefix, allB.length - suffix);
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = 1; i <= n; i += 1) {
    for (let j = 1; j <= m; j += 1) {
      lcs[i]![j] =
        a[i - 1] === b[j - 1] ? lcs[i - 1]![j - 1]! + 1 : Math.max(lcs[i - 1]![j]!, lcs[i]![j - 1]!);
    }
  }
  const matched: [number, number][] = [];
  let i = n;
  let j = m;
  while (i > 0 && j > 0) {
    if (a[i - 1] === b[j - 1]) {
      matched.push([i - 1, j - 1]);
      i -= 1;
      j -= 1;
    } else if (lcs[i - 1]![j]! >= lcs[i]![j - 1]!) i -= 1;
    else j -= 1;
  }
  matched.reverse();
  const out: [number, number, number, number][] = [];
  let pi = 0;
  let pj = 0;
  for (const [mi, mj] of [...matched, [n, m] as [number, number]]) {
    if (mi > pi || mj > pj) out.push([prefix + pi, prefix + mi, prefix + pj, prefix + mj]);
    pi = mi + 1;
    pj = mj + 1;
  }
  return out;
}
