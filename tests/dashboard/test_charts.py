"""The dashboard's chart helpers: emotion colours by meaning, the sparkline image."""

import base64
import math
import re

from dashboard_data import colour_kind

from callmood.dashboard import charts

DEFAULT_MODEL = {"neutral": 0, "happy": 1, "sad": -1, "angry": -1, "fearful": -1,
                 "disgust": -1, "surprised": 0}


def test_emotion_colours_follow_meaning():
    colours = charts.emotion_colours(list(DEFAULT_MODEL), DEFAULT_MODEL)
    assert list(colours) == list(DEFAULT_MODEL)
    kinds = {label: colour_kind(colour) for label, colour in colours.items()}
    assert {kinds[e] for e in ("sad", "angry", "fearful", "disgust")} == {"warm"}
    assert kinds["happy"] == "green"
    assert kinds["neutral"] == "grey" and kinds["surprised"] in ("grey", "blue")
    assert colours["angry"] == charts.NEGATIVE_COLOUR  # the negative share's colour too
    assert len(set(colours.values())) == len(colours)


def test_emotion_colours_come_from_the_valence_not_the_names():
    valence = {"joy": 1.0, "frustration": -1.0, "boredom": -0.5, "calm": 0.0,
               "relief": 0.5, "contempt": -1.0, "surprised": 1.0}
    labels = ["calm", "joy", "frustration", "boredom", "relief", "contempt", "surprised",
              "unknown"]
    kinds = {k: colour_kind(c) for k, c in charts.emotion_colours(labels, valence).items()}
    assert kinds == {"calm": "grey", "joy": "green", "frustration": "warm", "boredom": "warm",
                     "relief": "green", "contempt": "warm", "surprised": "green",
                     "unknown": "blue"}  # no valence: neutral


def test_emotion_scale_is_the_colour_map():
    colours = {"neutral": "#9e9e9e", "angry": "#d62728"}
    scale = charts.emotion_scale(colours).to_dict()
    assert scale == {"domain": ["neutral", "angry"], "range": ["#9e9e9e", "#d62728"]}


def svg(url: str) -> str:
    prefix = "data:image/svg+xml;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix):]).decode()


def test_sparkline_leaves_a_gap_for_a_day_without_a_value():
    image = svg(charts.sparkline([0.5, 0.25, None, math.nan, 0.0, 1.0, None, 0.75]))
    # two line pieces (days 1-2 and 5-6) and a dot for the lone day 8; nothing for 3, 4, 7
    assert len(re.findall(r"<polyline ", image)) == 2
    assert len(re.findall(r"<circle ", image)) == 1
    assert charts.NEGATIVE_COLOUR in image


def test_sparkline_of_no_values_is_none():
    assert charts.sparkline(None) is None
    assert charts.sparkline([]) is None
    assert charts.sparkline([None, math.nan]) is None
    assert "<circle " in svg(charts.sparkline([0.3]))  # a single day is a dot
