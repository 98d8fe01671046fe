"""The Modal apps: `serving_app` (the model service, its baseline and the reviewer app) and
`train_app` (fine-tuning on a GPU), with the warm-hours schedule and the smoke check.

The only package that imports `modal`, and the only one that knows both `app` and `serving`;
nothing imports it.
"""
