"""One Lightning training stage: the LightningModule, its callbacks, its resumable logs."""
