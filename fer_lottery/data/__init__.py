"""Data: SFEW folder layout, MTCNN face crops, splits, augmentation, synthetic faces."""

CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
