"""The Modal apps, as documents: `serving_app` (the model service, its baseline, the reviewer app
and the warm-hours cron) and `train_app` (fine-tuning on a GPU), on one `settings` class (every
`WRITING_*` variable, the volume names) and one image recipe (`images`); with the pieces they
wire up that need no Modal: `warm_hours`, `train_inputs` and the `smoke` check.

The only package that imports `modal`, and the only one that knows both `app` and `serving`;
nothing imports it.
"""
