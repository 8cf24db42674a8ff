"""The seven SFEW expression classes, in the order of every label, logit and table."""

CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
