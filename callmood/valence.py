"""The sign of each emotion for "negative emotion" figures; labels not listed count as 0.

A model folder's card takes its valence from here when training sets none, and the
dashboard falls back on it for a results folder without labels.json; both read this
module, which imports nothing, so the dashboard loads no model code for it.
"""

DEFAULT_VALENCE = {"angry": -1, "sad": -1, "fearful": -1, "disgust": -1, "happy": 1,
                   "surprised": 0, "neutral": 0, "calm": 0, "boredom": 0}
