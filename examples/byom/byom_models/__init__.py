"""Models of the "bring your own model" example: factories trtopt imports as ``package.module:function``.

- ``byom_models.detector:make_detector``: a SiLU conv detector, ``image [N,1,32,32]`` ->
  ``boxes [N,4]`` (normalised cx, cy, w, h), ``logits [N,10]``.
- ``byom_models.encoder:make_encoder``: a two-input encoder, ``input_ids [N,32]`` (int64) and
  ``attention_mask [N,32]`` (int64, 1 = token) -> ``logits [N,4]``.
- ``byom_models.metrics:hit_rate``: the detector's task metric (percent).
- ``byom_models.losses:detection_loss``: the detector's training loss (also used by fine-tuning).
"""
