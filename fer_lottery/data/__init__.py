"""Data: SFEW folder layout, MTCNN face crops, splits, augmentation, synthetic faces."""
