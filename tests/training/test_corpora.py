"""training/corpora/ and labels.py: every adapter on its naming scheme, real and generated."""

import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from callmood.training.corpora import cremad, emodb, generic, ravdess, savee, tess
from callmood.training.corpora.base import CorpusError, audio_files
from callmood.training.corpora.registry import load_corpora, load_corpus, parse_corpus_arg
from callmood.training.labels import apply_mapping, ordered_labels, parse_mapping

RAVDESS_LABELS = {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                  "surprised"}
EMODB_LABELS = {"angry", "boredom", "disgust", "fearful", "happy", "sad", "neutral"}


@pytest.fixture(scope="module")
def ravdess_all(shared_dir):
    return ravdess.scan(shared_dir / "data/ravdess")


@pytest.fixture(scope="module")
def emodb_all(shared_dir):
    return emodb.scan(shared_dir / "data/emodb")


def tiny_files(write_wav, names):
    """Write a 50 ms tone under each relative name; returns the paths."""
    return [write_wav(name, seconds=0.05) for name in names]


# --- real corpora -----------------------------------------------------------------------

def test_ravdess_real(ravdess_all):
    utterances, skipped = ravdess_all
    assert len(utterances) == 1440 and skipped == []
    speakers = Counter(u.speaker for u in utterances)
    assert sorted(speakers) == [f"ravdess:{a:02d}" for a in range(1, 25)]
    assert set(speakers.values()) == {60}
    labels = Counter(u.label for u in utterances)
    assert set(labels) == RAVDESS_LABELS == set(ravdess.LABELS)
    # 96 neutral (normal intensity only), 192 of every other emotion
    assert labels["neutral"] == 96 and all(labels[e] == 192 for e in RAVDESS_LABELS - {"neutral"})
    assert {u.corpus for u in utterances} == {"ravdess"}
    one = next(u for u in utterances if u.path.endswith("03-01-05-02-01-01-07.flac"))
    assert (one.label, one.speaker) == ("angry", "ravdess:07")


def test_emodb_real(emodb_all):
    utterances, skipped = emodb_all
    assert len(utterances) == 535 and skipped == []
    speakers = {u.speaker.split(":")[1] for u in utterances}
    assert speakers == {"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}
    assert {u.label for u in utterances} == EMODB_LABELS == set(emodb.LABELS)
    one = next(u for u in utterances if u.path.endswith("03a01Wa.flac"))
    assert (one.label, one.speaker, one.corpus) == ("angry", "emodb:03", "emodb")
    assert Counter(u.label for u in utterances)["boredom"] == 81


def test_registry_loads_real_corpora(shared_dir):
    both = load_corpora([f"ravdess={shared_dir}/data/ravdess", f"EmoDB={shared_dir}/data/emodb"])
    assert Counter(u.corpus for u in both) == {"ravdess": 1440, "emodb": 535}
    # speakers are corpus-qualified: RAVDESS actor 03 and EmoDB speaker 03 differ
    assert len({u.speaker for u in both}) == 34


# --- generated fixtures in each corpus's scheme -----------------------------------------

def test_ravdess_scheme_and_skips(write_wav, tmp_path):
    good = tiny_files(write_wav, ["rav/Actor_01/03-01-01-01-01-01-01.wav",
                                  "rav/Actor_01/03-01-08-02-02-02-01.flac",
                                  "rav/Actor_12/03-01-06-01-01-02-12.wav"])
    bad = tiny_files(write_wav, ["rav/Actor_01/03-02-01-01-01-01-01.wav",  # song
                                 "rav/Actor_01/01-01-03-01-01-01-01.wav",  # video
                                 "rav/Actor_01/03-01-09-01-01-01-01.wav",  # no emotion 09
                                 "rav/Actor_01/recording.wav"])
    (tmp_path / "rav/Actor_01/notes.txt").write_text("not audio, not counted")
    utterances, skipped = ravdess.scan(tmp_path / "rav")
    assert [(u.label, u.speaker) for u in utterances] == [
        ("neutral", "ravdess:01"), ("surprised", "ravdess:01"), ("fearful", "ravdess:12")]
    assert [u.path for u in utterances] == [str(p) for p in good]
    assert sorted(skipped) == sorted(bad)


def test_cremad_scheme_and_skips(write_wav, tmp_path):
    tiny_files(write_wav, ["cremad/AudioWAV/1001_DFA_ANG_XX.wav",
                           "cremad/AudioWAV/1001_IEO_HAP_HI.wav",
                           "cremad/AudioWAV/1091_TSI_NEU_XX.wav",
                           "cremad/AudioWAV/1050_WSI_SAD_LO.wav",
                           "cremad/AudioWAV/1050_ITH_FEA_MD.wav",
                           "cremad/AudioWAV/1050_ITH_DIS_XX.wav"])
    bad = tiny_files(write_wav, ["cremad/AudioWAV/1001_DFA_SUR_XX.wav",  # no such emotion
                                 "cremad/AudioWAV/101_DFA_ANG_XX.wav",
                                 "cremad/AudioWAV/1001-DFA-ANG-XX.wav"])
    utterances, skipped = cremad.scan(tmp_path / "cremad")
    assert sorted((u.speaker, u.label) for u in utterances) == [
        ("cremad:1001", "angry"), ("cremad:1001", "happy"), ("cremad:1050", "disgust"),
        ("cremad:1050", "fearful"), ("cremad:1050", "sad"), ("cremad:1091", "neutral")]
    assert sorted(skipped) == sorted(bad)
    assert {u.label for u in utterances} == set(cremad.LABELS)


def test_tess_scheme_and_skips(write_wav, tmp_path):
    tiny_files(write_wav, ["tess/OAF_angry/OAF_back_angry.wav",
                           "tess/OAF_Fear/OAF_bath_fear.wav",
                           "tess/YAF_pleasant_surprised/YAF_dog_ps.wav",
                           "tess/YAF_pleasant_surprised/YAF_dog_pleasant_surprised.wav",
                           "tess/yaf_sad/yaf_chair_sad.wav",
                           "tess/OAF_neutral/OAF_base_neutral.wav"])
    bad = tiny_files(write_wav, ["tess/OAF_angry/MAF_back_angry.wav",  # unknown speaker
                                 "tess/OAF_angry/OAF_back_bored.wav",  # unknown emotion
                                 "tess/OAF_angry/OAF_back.wav"])
    utterances, skipped = tess.scan(tmp_path / "tess")
    assert Counter((u.speaker, u.label) for u in utterances) == {
        ("tess:OAF", "angry"): 1, ("tess:OAF", "fearful"): 1, ("tess:OAF", "neutral"): 1,
        ("tess:YAF", "surprised"): 2, ("tess:YAF", "sad"): 1}
    assert sorted(skipped) == sorted(bad)


def test_savee_scheme_and_skips(write_wav, tmp_path):
    tiny_files(write_wav, ["savee/ALL/DC_a01.wav", "savee/ALL/JE_sa15.wav",
                           "savee/ALL/KL_su03.wav", "savee/JK/n30.wav", "savee/JK/h01.wav",
                           "savee/DC/d02.wav", "savee/DC/f07.wav"])
    bad = tiny_files(write_wav, ["savee/ALL/XX_a01.wav",  # unknown speaker
                                 "savee/ALL/DC_x01.wav",  # unknown emotion
                                 "savee/other/a01.wav"])  # nested, but not a speaker folder
    utterances, skipped = savee.scan(tmp_path / "savee")
    assert sorted((u.speaker, u.label) for u in utterances) == [
        ("savee:DC", "angry"), ("savee:DC", "disgust"), ("savee:DC", "fearful"),
        ("savee:JE", "sad"), ("savee:JK", "happy"), ("savee:JK", "neutral"),
        ("savee:KL", "surprised")]
    assert sorted(skipped) == sorted(bad)


def test_generic_folder_per_label(write_wav, tmp_path):
    tiny_files(write_wav, ["calls/angry/agent7/a.wav", "calls/angry/agent7/b.flac",
                           "calls/happy/agent9/c.wav", "calls/happy/d.wav"])
    (tmp_path / "calls/happy/readme.md").write_text("ignored")
    utterances, skipped = generic.scan(tmp_path / "calls", "mycalls")
    assert skipped == []
    assert sorted((u.label, u.speaker) for u in utterances) == [
        ("angry", "mycalls:agent7"), ("angry", "mycalls:agent7"), ("happy", "mycalls:agent9"),
        ("happy", "mycalls:file:d")]
    assert {u.corpus for u in utterances} == {"mycalls"}


def test_generic_folder_rejects_files_at_the_top(write_wav, tmp_path):
    tiny_files(write_wav, ["flat/a.wav"])
    with pytest.raises(CorpusError, match="ROOT/<label>"):
        generic.scan(tmp_path / "flat")


def test_csv_manifest(write_wav, tmp_path):
    a, b, c = tiny_files(write_wav, ["audio/a.wav", "audio/b.wav", "elsewhere/c.wav"])
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,label,speaker\naudio/a.wav,angry,07\naudio/b.wav,sad,\n"
                        f"{c},happy,08\n")
    utterances = load_corpus("calls", manifest)
    assert [(u.path, u.label, u.speaker, u.corpus) for u in utterances] == [
        (str(a), "angry", "calls:07", "calls"), (str(b), "sad", "calls:file:b", "calls"),
        (str(c), "happy", "calls:08", "calls")]


def test_a_folder_with_a_manifest_reads_the_manifest(write_wav, tmp_path):
    """The shared corpora's layout: FOLDER/manifest.csv with extra columns."""
    write_wav("corpus/01Neutral/a.ogg", format="OGG", subtype="OPUS")
    (tmp_path / "corpus" / "manifest.csv").write_text(
        "path,label,speaker,gender,language,source_name\n"
        "01Neutral/a.ogg,neutral,ased_01,f,am,a.wav\n")
    utterances = load_corpus("ased", tmp_path / "corpus")
    assert [(u.label, u.speaker, u.corpus) for u in utterances] == [
        ("neutral", "ased:ased_01", "ased")]
    assert utterances[0].path == str(tmp_path / "corpus" / "01Neutral" / "a.ogg")


@pytest.mark.parametrize("name", ["ased", "nemo", "kored", "emovo"])
def test_the_shared_manifest_corpora_load(shared_dir, name):
    utterances = load_corpus(name, shared_dir / "data" / name)
    expected = {"ased": (2474, 65), "nemo": (4481, 9), "kored": (300, 15), "emovo": (588, 6)}
    assert (len(utterances), len({u.speaker for u in utterances})) == expected[name]
    assert {u.label for u in utterances} <= {"neutral", "happy", "sad", "angry", "fearful",
                                             "disgust", "surprised"}


def test_parquet_manifest_without_speaker_column(write_wav, tmp_path):
    a, b = tiny_files(write_wav, ["p/a.wav", "p/b.wav"])
    manifest = tmp_path / "p" / "list.parquet"
    pd.DataFrame({"path": ["a.wav", str(b)], "label": ["neutral", "angry"]}).to_parquet(manifest)
    utterances, skipped = generic.scan(manifest, "pq")
    assert skipped == []
    assert [(u.path, u.label, u.speaker) for u in utterances] == [
        (str(a), "neutral", "pq:file:a"), (str(b), "angry", "pq:file:b")]


def test_manifest_errors(tmp_path):
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("path,emotion\na.wav,sad\n")
    with pytest.raises(CorpusError, match=r"lacks column\(s\) \['label'\]"):
        generic.scan(no_label)
    blank = tmp_path / "blank.csv"
    blank.write_text("path,label\na.wav,sad\nb.wav,\n")
    with pytest.raises(CorpusError, match="row 3 has no label"):
        generic.scan(blank)
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(CorpusError, match="cannot read manifest"):
        generic.scan(broken)


def test_registry_logs_skipped_files(write_wav, tmp_path, caplog):
    tiny_files(write_wav, ["r/Actor_02/03-01-03-01-01-01-02.wav",
                           "r/Actor_02/03-02-03-01-01-01-02.wav", "r/Actor_02/take2.wav"])
    with caplog.at_level(logging.WARNING):
        utterances = load_corpus("ravdess", tmp_path / "r")
    assert len(utterances) == 1
    assert "ravdess: skipped 2 files" in caplog.text


def test_registry_errors(write_wav, tmp_path):
    with pytest.raises(CorpusError, match="NAME=PATH"):
        parse_corpus_arg("ravdess")
    assert parse_corpus_arg("RAVDESS=/a=b") == ("ravdess", Path("/a=b"))
    with pytest.raises(CorpusError, match="corpus folder not found"):
        load_corpus("ravdess", tmp_path / "absent")
    (tmp_path / "silent_folder").mkdir()
    with pytest.raises(CorpusError, match="no audio files"):
        audio_files(tmp_path / "silent_folder")
    tiny_files(write_wav, ["wrong/Actor_01/hello.wav"])
    with pytest.raises(CorpusError, match="no ravdess utterances"):
        load_corpus("ravdess", tmp_path / "wrong")


# --- label mapping ----------------------------------------------------------------------

def test_calls_preset_merges_calm_and_drops_boredom(ravdess_all, emodb_all):
    mapping = parse_mapping("calls", [])
    mapped = apply_mapping(ravdess_all[0] + emodb_all[0], mapping)
    labels = Counter(u.label for u in mapped)
    assert set(labels) == RAVDESS_LABELS - {"calm"}
    assert labels["neutral"] == 96 + 192 + 79  # RAVDESS neutral + calm, EmoDB neutral
    assert len(mapped) == 1440 + 535 - 81
    assert ordered_labels(set(labels)) == ["neutral", "happy", "sad", "angry", "fearful",
                                           "disgust", "surprised"]


def test_map_overrides():
    mapping = parse_mapping("corpus", ["Surprised=happy", "disgust=drop"])
    assert mapping == {"surprised": "happy", "disgust": None}
    with pytest.raises(ValueError, match="SOURCE=TARGET"):
        parse_mapping("corpus", ["angry"])
    with pytest.raises(ValueError, match="unknown label preset"):
        parse_mapping("movies", [])
    assert ordered_labels(["zeal", "sad", "awe", "neutral"]) == ["neutral", "sad", "awe", "zeal"]
