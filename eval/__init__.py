"""The eval harness: datasets in; grammar, clarity and style scores and latency percentiles out."""
