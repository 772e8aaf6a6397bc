"""The expression classes shared by AffectNet, the synthetic data set, training and predict."""

# AffectNet's codes 0-7 (8 / 9 / 10 = None / Uncertain / No-face are filtered by the loader).
EXPRESSIONS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
NUM_EXPRESSIONS = len(EXPRESSIONS)
