"""Everything that runs the model: `serving` (the model service), `training` (fine-tuning,
checks and promotion) and `deploy` (the Modal apps). Imports run downward: `deploy` uses both
others, `training` uses `serving`, and nothing imports `deploy`.
"""
