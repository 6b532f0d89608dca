"""benchmarks/ablate.py's protocol bookkeeping and benchmarks/fit_call_analytics.py's choices,
on hand-made cells and trends (the trainings and the scoring are the benchmarks' own)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import load_benchmark

from callmood.results.call_summary import CallAnalytics


@pytest.fixture(scope="module")
def ablate():
    return load_benchmark("ablate")


@pytest.fixture(scope="module")
def fit():
    return load_benchmark("fit_call_analytics")


def cell(lever, held_out, seed, ua, share=None, budget=((4, 800, "bf16"),)):
    return {"lever": lever, "held_out": held_out, "seed": seed, "changes": {}, "ua": ua,
            "ua_line": ua - 0.1, "dev_calls": {"customer_share_error_points": share},
            "budget": [list(b) for b in budget]}


def test_a_lever_is_summarised_per_seed_over_corpora_then_over_seeds(ablate):
    cells = [cell("baseline", "emodb", 0, 0.40, 30.0), cell("baseline", "nemo", 0, 0.50, 20.0),
             cell("baseline", "emodb", 1, 0.44, 28.0), cell("baseline", "nemo", 1, 0.54, 22.0),
             cell("prosody", "emodb", 0, 0.50), cell("prosody", "nemo", 0, 0.60)]
    levers = ablate.summarise(cells)
    base = levers["baseline"]
    assert base["cells"] == 4
    assert base["ua"]["mean"] == pytest.approx(0.47) and base["ua"]["seeds"] == 2
    assert base["ua"]["sd"] == pytest.approx(np.std([0.45, 0.49], ddof=1), abs=1e-4)
    assert base["dev_calls.customer_share_error_points"]["mean"] == pytest.approx(25.0)
    prosody = levers["prosody"]
    assert prosody["ua"]["mean"] == pytest.approx(0.55) and prosody["ua"]["sd"] is None
    assert prosody["dev_calls.customer_share_error_points"]["mean"] is None
    # against the baseline's cells of the same corpora and seeds (seed 0 only), not all four
    assert prosody["ua"]["vs_reference"] == {"mean": pytest.approx(0.1), "cells": 2}
    table = ablate.markdown(levers)
    assert "| prosody |" in table and "(+0.100 on 2 paired cells)" in table
    assert "0.470 ± 0.028" in table


def test_dev_call_figures_are_paired_only_on_the_same_calls(ablate):
    """A cell scored on regenerated dev calls (another truth) is compared with its
    reference on the held-out corpora, not on the calls; a cell kept before cells named
    their calls counts as scored on the calls of that time."""
    share = "dev_calls.customer_share_error_points"
    old = cell("baseline", "emodb", 0, 0.40, 30.0)
    same = cell("warp", "emodb", 0, 0.50, 26.0)
    same["dev_calls"]["calls_version"] = ablate.CALLS_BEFORE_VERSIONS
    other = cell("warp", "emodb", 1, 0.50, 26.0)
    other["dev_calls"]["calls_version"] = "0123456789ab"
    base = ablate.cells_by_pair([old, {**old, "seed": 1}], "baseline")
    assert ablate.paired_differences([same, other], base, share) == [(same, -4.0)]
    assert [d for _, d in ablate.paired_differences([same, other], base, "ua")] == \
        pytest.approx([0.1, 0.1])
    table = ablate.markdown(ablate.summarise([old, {**old, "seed": 1}, same, other]))
    assert "| 26.000 ± 0.000 ‡ (-4.000 on 1 paired cells) |" in table
    assert "‡ cells scored on other dev calls" in table
    assert "(+0.100) |" in table  # the held-out corpus is compared


def test_the_gains_figure_pairs_each_cell_with_the_baselines(ablate, tmp_path):
    """Pairs are by held-out corpus and seed; a cell without the baseline's, or where
    either lacks the metric (no dev calls: share None), is left out, not counted as 0;
    the table's difference to the baseline is the mean of the same pairs."""
    share = "dev_calls.customer_share_error_points"
    cells = [cell("baseline", "emodb", 0, 0.40, 30.0), cell("baseline", "nemo", 0, 0.50, 20.0),
             cell("baseline", "ased", 0, 0.30),
             cell("prosody", "emodb", 0, 0.50), cell("prosody", "nemo", 1, 0.60),
             cell("speaker", "nemo", 0, 0.45, 25.0), cell("speaker", "emodb", 0, 0.42, 24.0),
             cell("speaker", "ased", 0, 0.33, 21.0)]
    base = ablate.cells_by_pair(cells, "baseline")
    assert set(base) == {("emodb", 0), ("nemo", 0), ("ased", 0)}
    prosody = [c for c in cells if c["lever"] == "prosody"]
    (paired,) = ablate.paired_differences(prosody, base, "ua")
    assert paired[0]["held_out"] == "emodb" and paired[1] == pytest.approx(0.1)
    assert ablate.paired_differences(prosody, base, share) == []
    speaker = [c for c in cells if c["lever"] == "speaker"]
    errors = {c["held_out"]: d for c, d in ablate.paired_differences(speaker, base, share)}
    assert errors == {"nemo": pytest.approx(5.0), "emodb": pytest.approx(-6.0)}  # ased: no
    levers = ablate.summarise(cells)
    assert levers["speaker"][share]["vs_reference"] == {"mean": pytest.approx(-0.5),
                                                       "cells": 2}
    assert levers["speaker"]["ua"]["vs_reference"]["cells"] == 3
    assert levers["prosody"][share]["vs_reference"] is None
    path = tmp_path / "figures" / "gains.png"
    ablate.plot_gains(cells, path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_a_lever_at_another_budget_is_read_against_that_budgets_baseline(ablate):
    """The budget a cell was trained with (from its settings, however it was set) decides:
    a lever at the baseline's is paired with the baseline; at another, with the lever that
    changes the budget alone to it (the first by name), or with nothing."""
    def made(lever, changes, ua, epochs=4, seed=0, precision="bf16"):
        return {**cell(lever, "emodb", seed, ua, budget=[(epochs, 800, precision)]),
                "changes": changes}
    cells = [made("baseline", {}, 0.30), made("budget-12", {"epochs": 12}, 0.40, 12),
             made("z-12", {"epoch_size": 800, "epochs": 12}, 0.41, 12),  # the same budget
             made("warp", {"augment": {"frequency_warp": 0.1}}, 0.32),
             made("warp-12", {"augment.frequency_warp": 0.1, "epochs": 12}, 0.45, 12),
             made("warp-12", {"augment.frequency_warp": 0.1, "epochs": 12}, 0.47, 12, 1),
             # 12 epochs from --epochs 12, not --set: its changes do not say so
             made("mix-12", {"val_channels": ["clean", "gsm"]}, 0.43, 12),
             made("warp-6", {"augment.frequency_warp": 0.1, "epochs": 6}, 0.36, 6),
             # a machine without native bf16: the baseline again in fp32, then a lever
             made("fp32", {"precision": "fp32"}, 0.31, precision="fp32"),
             made("random-fp32", {"init": "random:tiny"}, 0.20, precision="fp32"),
             made("budget-12-fp32", {"epochs": 12, "precision": "fp32"}, 0.39, 12,
                  precision="fp32"),
             {**made("ensemble", {"ensemble": ["a", "b"]}, 0.5),
              "budget": [[4, 800, "bf16"], [12, 800, "bf16"]]}]
    assert ablate.references(cells) == {
        "baseline": "baseline", "budget-12": "baseline", "z-12": "baseline",
        "warp": "baseline", "warp-12": "budget-12", "mix-12": "budget-12",
        "warp-6": None, "fp32": "baseline", "random-fp32": "fp32",
        "budget-12-fp32": "fp32",  # what 12 epochs buy in fp32, not 12 epochs and fp32
        "ensemble": None}
    levers = ablate.summarise(cells)
    assert levers["warp-12"]["reference"] == "budget-12"
    warp = levers["warp-12"]["ua"]
    assert warp["vs_reference"] == {"mean": pytest.approx(0.05), "cells": 1}
    assert levers["mix-12"]["ua"]["vs_reference"]["mean"] == pytest.approx(0.03)
    assert levers["budget-12"]["ua"]["vs_reference"]["mean"] == pytest.approx(0.10)
    assert levers["warp-6"]["ua"]["vs_reference"] is None
    assert levers["random-fp32"]["ua"]["vs_reference"]["mean"] == pytest.approx(-0.11)
    # the figure's pairs too
    (pair,) = ablate.against_reference(cells, "warp-12", "budget-12", "ua")
    assert pair[0]["seed"] == 0 and pair[1] == pytest.approx(0.05)
    table = ablate.markdown(levers)
    # two cells of warp-12, one paired: the table says so
    assert "| 2 | budget-12 | 0.460 ± 0.014 (+0.050 on 1 paired cells) |" in table
    assert "| 1 | budget-12 | 0.430 (+0.030) |" in table
    assert ('| 1 | nothing (no lever of [[6, 800, "bf16"]] [epochs, examples an epoch, '
            "precision] alone) | 0.360 |") in table
    assert "| baseline | – | [[4, 800]] |" not in table and "| baseline | – | 1 | – |" in table


def test_a_kept_cells_budget_is_its_models_or_its_members(ablate):
    made = {"config": {"epochs": 12, "epoch_size": 800, "precision": "bf16", "lr": 1e-4}}
    assert ablate.budget(made) == [[12, 800, "bf16"]]
    members = {"config": {}, "members": [
        {"config": {"epochs": 4, "epoch_size": 800, "precision": "bf16"}},
        {"config": {"epochs": 12, "epoch_size": 800, "precision": "bf16"}},
        {"config": {"epochs": 4, "epoch_size": 800, "precision": "fp32"}}]}
    assert ablate.budget(members) == [[4, 800, "bf16"], [4, 800, "fp32"],
                                      [12, 800, "bf16"]]


def test_lever_settings_are_json_values(ablate):
    assert ablate.parse_sets(["augment.channel_p=0.4", "optimizer=sgd", "epochs=3"]) == {
        "augment.channel_p": 0.4, "optimizer": "sgd", "epochs": 3}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        ablate.parse_sets(["channel_p"])


def test_live_alerts_wait_for_the_rule_to_hold_in_a_row(fit):
    """Customer segments every 10 s over a 120 s call, negative from 60 s on: the rule (on
    the call so far) first holds once enough of the late third is negative; confirmation
    delays the alert by one segment per extra confirmation."""
    mids = np.arange(5.0, 120.0, 10.0)
    ends = mids + 4.0
    negative = np.where(mids > 60, 0.9, 0.1)
    trends = {"c": (ends, mids, negative)}
    rule = CallAnalytics(live_min_rise=0.3, live_min_evidence=0.0, live_min_segments=2,
                         confirm_segments=1)
    first = fit.live_alerts(trends, rule)["c"]
    later = fit.live_alerts(trends, replace(rule, confirm_segments=3))["c"]
    assert first in ends and later == pytest.approx(first + 20.0)
    # the live thresholds are the live rule's, not the nightly ones
    assert fit.live_alerts(trends, replace(rule, min_rise=0.95))["c"] == first
    assert np.isnan(fit.live_alerts(trends, replace(rule, live_min_rise=0.95))["c"])
    calm = {"c": (ends, mids, np.full(len(mids), 0.1))}
    assert np.isnan(fit.live_alerts(calm, rule)["c"])


def test_the_fit_keeps_the_false_alarm_cap_then_the_earliest_alerts(fit):
    def row(f1, false_alarms, delay, evidence=1.0):
        return {"bootstrap_f1": f1, "bootstrap_false_alarms": false_alarms,
                "median_s_after_first_negative": delay, "live_min_evidence": evidence,
                "live_min_segments": 2, "live_min_rise": 0.2}
    rows = [row(0.9, 0.20, 10.0), row(0.5, 0.04, 60.0), row(0.5, 0.05, 30.0),
            row(0.5, 0.05, 30.0, evidence=3.0), row(0.0, 0.0, None)]
    best = fit.best_flags(rows, prefix="live_")
    assert best == rows[3] | {"within_false_alarm_cap": True}
    # nothing under the cap: the best F1 of all, and the report says so
    over = fit.best_flags([row(0.9, 0.2, 10.0), row(0.4, 0.1, 5.0)], prefix="live_")
    assert over["bootstrap_f1"] == 0.9 and over["within_false_alarm_cap"] is False
    # a rule that never alerts on an escalating call (no delay) is not the earliest
    assert fit.best_flags([row(0.0, 0.0, None), row(0.0, 0.0, 90.0)],
                          prefix="live_")["median_s_after_first_negative"] == 90.0


def test_bootstrap_figures_average_resamples_of_the_calls(fit):
    table = pd.DataFrame({"escalates": [True, True, False, False],
                          "calm": [False, False, True, True]}, index=list("abcd"))
    flags = pd.Series([True, False, True, False], index=list("abcd"))
    everyone = np.array([[0, 1, 2, 3]])  # one resample: the calls themselves
    f1, false_alarms = fit.bootstrap_flags(flags, table, everyone)
    assert f1 == pytest.approx(0.5) and false_alarms == pytest.approx(0.5)
    only_hits = np.array([[0, 0, 2, 3], [0, 1, 3, 3]])
    f1, false_alarms = fit.bootstrap_flags(flags, table, only_hits)
    assert f1 == pytest.approx((2 * 2 / (2 * 2 + 1) + 2 / 3) / 2)
    assert false_alarms == pytest.approx((0.5 + 0.0) / 2)


def test_a_cell_kept_before_a_setting_existed_counts_as_made_with_it_off(ablate, tmp_path):
    store = ablate.harness.CellStore(tmp_path)
    old = {"held_out": "emodb", "config": {"lr": 1e-4, "mel": {"n_mels": 128},
                                           "augment": {"gain_db": [-20.0, 20.0]}}}
    store.save_with_settings("baseline-emodb-s0", old, {"ua": 0.4})
    now = {"held_out": "emodb", "config": {"lr": 1e-4, "affect_heads": 0.0,
                                           "corpus_adversary": 0.0, "backbone": "vit",
                                           "val_channels": (), "teachers": (),
                                           "teacher_weight": 0.5,
                                           "mel": {"n_mels": 128, "speaker_mean": False,
                                                   "speaker_shift_db": None,
                                                   "spectral_mean": False,
                                                   "frontend": "log-mel", "prosody_rows": 0},
                                           "augment": {"gain_db": (-20.0, 20.0),
                                                       "frequency_warp": 0.0}}}
    assert ablate.kept_cell(store, "baseline-emodb-s0", now) == {"ua": 0.4}
    on = {**now, "config": {**now["config"], "affect_heads": 0.5}}
    assert ablate.kept_cell(store, "baseline-emodb-s0", on) is None
    warped = {**now, "config": {**now["config"], "augment": {"gain_db": (-20.0, 20.0),
                                                             "frequency_warp": 0.1}}}
    assert ablate.kept_cell(store, "baseline-emodb-s0", warped) is None
    changed = {**now, "config": {**now["config"], "lr": 2e-4}}
    assert ablate.kept_cell(store, "baseline-emodb-s0", changed) is None
    assert ablate.comparable(now) == ablate.comparable(old)  # names one checkpoint too
    # kept before cells named their dev calls: scored on the calls of that time
    assert ablate.kept_cell(store, "baseline-emodb-s0", now,
                            ablate.CALLS_BEFORE_VERSIONS) == {"ua": 0.4}
    assert ablate.kept_cell(store, "baseline-emodb-s0", now, "0123456789ab") is None
    with pytest.raises(ablate.KeptCellConflict, match="baseline-emodb-s0.json was made"):
        ablate.refuse_to_replace(store, "baseline-emodb-s0")  # never replaced
    ablate.refuse_to_replace(store, "baseline-emodb-s1")  # a free name


def test_an_ensemble_is_made_of_the_kept_cells_models(ablate, tmp_path):
    """Its members are the model folders trained with their kept cells' settings, found
    by those settings (a folder of other settings is passed over), and it waits for every
    member's cell."""
    args = ablate.argparse.Namespace(shared=tmp_path, epochs=4, epoch_size=800,
                                     precision="bf16", device="auto", max_per_corpus=800,
                                     max_test=400, dev_calls=30, work=tmp_path / "work")
    store = ablate.harness.CellStore(tmp_path / "cells")
    changes = {"baseline": {}, "channel-share-40": {"augment.channel_p": 0.4}}
    wanted = {lever: ablate.settings(args, change, "emodb", 0)
              for lever, change in changes.items()}
    for lever, folder in (("baseline", "old-key"), ("baseline", "other"),
                          ("channel-share-40", "x")):
        trained = args.work / f"{lever}-emodb-s0-{folder}"
        trained.mkdir(parents=True)
        config = {**wanted[lever]["config"], "init": "/somewhere/deit-tiny-in1k",
                  "lr": 1.0 if folder == "other" else wanted[lever]["config"]["lr"]}
        (trained / "callmood.json").write_text(ablate.json.dumps({"training": {
            "config": config}}))
    store.save_with_settings("baseline-emodb-s0", wanted["baseline"], {"changes": {}})
    assert ablate.ensemble_members(args, list(changes), "emodb", 0, store) is None
    store.save_with_settings("channel-share-40-emodb-s0", wanted["channel-share-40"],
                             {"changes": changes["channel-share-40"]})
    dirs, settings = ablate.ensemble_members(args, list(changes), "emodb", 0, store)
    assert [d.name for d in dirs] == ["baseline-emodb-s0-old-key", "channel-share-40-emodb-s0-x"]
    assert settings["max_test"] == 400  # the members', whatever this command says
    assert [m["config"]["augment"]["channel_p"] for m in settings["members"]] == [0.8, 0.4]
    assert ablate.ensemble_name(list(changes)) == "ensemble-baseline+channel-share-40"


def test_a_distilled_levers_model_is_found_by_its_teachers_names(ablate, tmp_path):
    """The card keeps a teacher's whole path, the kept cell its folder's name."""
    args = ablate.argparse.Namespace(shared=tmp_path, epochs=4, epoch_size=800,
                                     precision="bf16", device="auto", max_per_corpus=800,
                                     max_test=400, dev_calls=30, work=tmp_path / "work")
    teacher = tmp_path / "work" / "baseline-emodb-s0-abc"
    wanted = ablate.settings(args, {"teachers": [str(teacher)]}, "emodb", 0)
    assert wanted["config"]["teachers"] == ["baseline-emodb-s0-abc"]
    trained = args.work / "distil-emodb-s0-key"
    trained.mkdir(parents=True)
    config = {**wanted["config"], "init": "/x/deit-tiny-in1k", "teachers": [str(teacher)]}
    (trained / "callmood.json").write_text(ablate.json.dumps({"training": {"config": config}}))
    assert ablate.trained_model(args, "distil", "emodb", 0, wanted) == trained


def test_a_trial_stopped_by_ctrl_c_is_queued_again_and_a_failed_one_is_not(ablate, tmp_path):
    study = ablate.open_study(tmp_path, "s", None, "none", epochs=1, seed=0)

    def stopped(trial, how: str):
        trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        trial.set_user_attr("lever", f"s-{how}")
        trial.set_user_attr(how, True)
        raise KeyboardInterrupt if how == "interrupted" else ValueError(how)

    for how in ("interrupted", "error"):
        with pytest.raises(KeyboardInterrupt if how == "interrupted" else ValueError):
            study.optimize(lambda trial, how=how: stopped(trial, how), n_trials=1)
    for _ in range(2):  # once, however often the study is opened again
        ablate.retry_interrupted(study)
    interrupted, failed, *queued = study.get_trials(deepcopy=False)
    assert [t.user_attrs["lever"] for t in queued] == ["s-interrupted"]
    assert queued[0].state == ablate.optuna.trial.TrialState.WAITING
    assert queued[0].system_attrs["fixed_params"] == interrupted.params  # drawn when run


def test_a_difference_gets_its_t_interval_over_the_held_out_corpora(ablate):
    corpora = ("emodb", "nemo", "emovo", "ased")
    base = [cell("baseline", corpus, seed, 0.40) for corpus in corpora for seed in (0, 1)]
    # per corpus, seed 0 and seed 1: their means 0.04, 0.03, 0.05, -0.01
    gains = {"emodb": (0.05, 0.03), "nemo": (0.02, 0.04), "emovo": (0.07, 0.03),
             "ased": (-0.02, 0.0)}
    lever = [cell("warp", corpus, seed, 0.40 + gains[corpus][seed]) for corpus in corpora
             for seed in (0, 1)]
    levers = ablate.summarise(base + lever)
    corpus_means = [0.04, 0.03, 0.05, -0.01]
    half = scipy.stats.t.ppf(0.975, 3) * np.std(corpus_means, ddof=1) / 2
    difference = levers["warp"]["ua"]["vs_reference"]
    assert difference["mean"] == pytest.approx(0.0275) and difference["cells"] == 8
    low, high = difference["interval"]
    assert low == pytest.approx(0.0275 - half, abs=1e-4)
    assert high == pytest.approx(0.0275 + half, abs=1e-4)
    assert low < 0 < high  # three corpora up of four do not make a gain here
    table = ablate.markdown(levers)
    assert f"(+0.028 [{low:+.3f}, {high:+.3f}])" in table and "95 % interval" in table
    # two corpora give no interval, however many seeds, and no footnote
    two = ablate.summarise(base + [c for c in lever if c["held_out"] in ("emodb", "nemo")])
    assert "interval" not in two["warp"]["ua"]["vs_reference"]
    assert "95 % interval" not in ablate.markdown(two)
