"""videogpa.engine: models, objectives, DPO step, distributed training, data, geometry scoring."""
