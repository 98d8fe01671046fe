"""The Modal apps, as documents: `serving_app` (the model service, our model and the baseline on
one GPU class, the reviewer app and the warm-hours cron) and `train_app` (fine-tuning on a GPU),
on one `settings` class (every `WRITING_*` variable, the volume names) and one image recipe
(`images`); with the pieces they wire up that need no Modal: `model_lifecycle` (a model
container's start-up around its memory snapshot), `gpu_plan` (the GPU table's arithmetic),
`warm_hours`, `train_inputs` and the `smoke` check.

The only package that imports `modal`, and the only one that knows both `app` and `serving`;
nothing imports it.
"""
