"""`callmood train | evaluate | tune | predict`: argument parsing; the work is in the library."""

from __future__ import annotations

import json
import logging
import os

import click

SHARED_HELP = "shared data folder holding protocols/ (env CALLMOOD_SHARED, default ../shared)"


def _shared_default() -> str:
    return os.environ.get("CALLMOOD_SHARED", "../shared")


def _split_options(command):
    """Options that choose the test speakers; shared by train, evaluate and tune."""
    options = [
        click.option("--corpus", "corpora", multiple=True, metavar="NAME=PATH",
                     help="corpus to use, repeatable: ravdess, emodb, cremad, tess, savee, or "
                          "any other NAME for a folder-per-label tree or a CSV/Parquet "
                          "manifest (path,label[,speaker])"),
        click.option("--fold", help="RAVDESS protocol fold 1..6 (or a fold of --folds N "
                                    "speaker folds); evaluate also takes 'all'"),
        click.option("--folds", "n_folds", type=int,
                     help="make N speaker-grouped folds over all corpora instead"),
        click.option("--test-speakers", help="explicit test speakers, e.g. 01,11 or "
                                             "ravdess:01,emodb:03"),
        click.option("--random-test", type=float,
                     help="random speaker-overlapping test fraction (not speaker-independent)"),
        click.option("--labels", "label_preset", default="corpus", show_default=True,
                     type=click.Choice(["corpus", "calls"]),
                     help="label set: the corpora's own, or the call set (calm→neutral, "
                          "boredom dropped)"),
        click.option("--map", "label_overrides", multiple=True, metavar="SOURCE=TARGET",
                     help="extra label mapping, repeatable; TARGET 'drop' removes the label"),
        click.option("--shared", default=_shared_default, show_default="../shared",
                     help=SHARED_HELP),
        click.option("--cache-dir", type=click.Path(file_okay=False),
                     help="feature cache (env CALLMOOD_CACHE, default ~/.cache/callmood)"),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _split_args(corpora, fold, n_folds, test_speakers, random_test, label_preset,
                label_overrides, shared, seed, allow_all=False) -> dict:
    """load_split's keyword arguments from the split options, checked as options
    (evaluate's `allow_all` takes --fold all)."""
    if not corpora:
        raise click.UsageError("Missing option '--corpus'.")
    if fold is not None and not (allow_all and fold == "all") and not str(fold).isdigit():
        raise click.BadParameter(f"expected a fold number, got {fold!r}", param_hint="--fold")
    return {"corpora": list(corpora), "fold": fold, "n_folds": n_folds,
            "test_speakers": test_speakers, "random_test": random_test,
            "label_preset": label_preset, "label_overrides": list(label_overrides),
            "shared": shared, "seed": seed}


def _echo_split(split) -> None:
    click.echo(f"split: {split.description}; {len(split.train)} train / {len(split.val)} "
               f"validation / {len(split.test)} test utterances", err=True)


def _fail(err: Exception):
    raise click.ClickException(str(err)) from None


@click.command()
@_split_options
@click.option("--backbone", type=click.Choice(["vit", "wav2vec2"]),
              help="vit: the spectrogram ViT (default); wav2vec2: a raw-audio encoder, "
                   "the comparison (training/wav2vec2.py)")
@click.option("--init", help="random:micro|tiny|small|base, a timm checkpoint folder "
                             "(e.g. ../shared/weights/deit-tiny-in1k), or a Hugging Face Hub "
                             "id / save_pretrained folder of a ViT, DeiT or AST; with "
                             "--backbone wav2vec2: random:micro|tiny|base or a wav2vec2 id / "
                             "folder (e.g. facebook/wav2vec2-base)")
@click.option("--epochs", type=int)
@click.option("--epoch-size", type=int,
              help="examples drawn per epoch (default: the training set's size)")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]))
@click.option("--schedule", type=click.Choice(["cosine", "plateau"]))
@click.option("--balance", type=click.Choice(["sampler", "corpus", "loss", "none"]),
              help="sampler: classes equally often; corpus: corpora equally often, and each "
                   "corpus's classes equally within it; loss: class weights in the loss")
@click.option("--mask-absent/--no-mask-absent", "mask_absent", default=None,
              help="weigh each example's loss over the classes its corpus has only (on by "
                   "default), so a corpus without a class does not teach against it")
@click.option("--patience", type=int, help="early-stopping patience in epochs")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
              help="auto: bf16 on CUDA, fp32 on CPU; bf16 speeds up CPUs with native bf16")
@click.option("--workers", type=int, help="feature-extraction processes")
@click.option("--channel-p", type=float,
              help="probability that a training example passes through one of its simulated "
                   "call channels (training/channel.py), 0 turns it off")
@click.option("--channel-variants", type=int,
              help="channels drawn once and cached per training file; an augmented example "
                   "is one of them, chosen at random")
@click.option("--specaugment/--no-specaugment", default=None,
              help="SpecAugment time/frequency masks (on by default)")
@click.option("--mixup", type=float, help="mixup alpha, 0 turns it off")
@click.option("--frequency-warp", type=float, metavar="W",
              help="vocal tract length perturbation: each example's frequencies scaled by a "
                   "factor drawn from [1 - W, 1 + W] (e.g. 0.1); 0 turns it off (default)")
@click.option("--speech-margin", type=float, metavar="S",
              help="cut each example to its speech with a margin drawn from [-0.1, S] "
                   "seconds at each end, so that the silence a corpus records around its "
                   "takes tells nothing (e.g. 0.6); 0 turns it off (default)")
@click.option("--ema-decay", type=float, metavar="D",
              help="keep a moving average of the weights (D per step, e.g. 0.99) and "
                   "validate and write it instead of the last weights; 0 turns it off "
                   "(default)")
@click.option("--val-channels", metavar="NAME,...",
              help="choose the best epoch on the validation speakers heard through these "
                   "channel conditions (each utterance through one, e.g. clean,telephone,"
                   "gsm,noise_snr10,reverb) instead of clean speech alone")
@click.option("--teacher", "teachers", multiple=True, metavar="MODEL",
              help="a model folder whose probabilities on each training utterance's clean "
                   "audio join its label as a soft target (repeatable: an ensemble, "
                   "averaged, distilled into this model)")
@click.option("--teacher-weight", type=float,
              help="the teachers' share of each example's target (default 0.5)")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON of settings, e.g. best_params.json from `callmood tune`")
@click.option("--out", type=click.Path(file_okay=False), help="model folder to write")
@click.option("--resume", type=click.Path(file_okay=False),
              help="continue the stopped run whose --out was DIR, from its last finished "
                   "epoch, with the settings it was started with (no other options needed)")
def train(corpora, fold, n_folds, test_speakers, random_test, label_preset, label_overrides,
          shared, cache_dir, seed, backbone, init, epochs, epoch_size, batch_size, lr,
          optimizer, schedule, balance, mask_absent, patience, device, precision, workers,
          channel_p, channel_variants, specaugment, mixup, frequency_warp, speech_margin,
          ema_decay, val_channels, teachers, teacher_weight, params_file, out, resume):
    """Fine-tune the spectrogram ViT (or --backbone wav2vec2) and write a model folder (best
    validation epoch).

    Every epoch is checkpointed in OUT/checkpoint, so a stopped run continues with
    `callmood train --resume OUT` to the same result as if it had never stopped.
    """
    from callmood.training.checkpoint import CheckpointError
    from callmood.training.runs import RunSettings, train_run
    from callmood.training.train import config_from_params

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if not (out or resume):
        raise click.UsageError("Missing option '--out' (or --resume DIR).")
    try:
        if resume:  # everything as the run was started
            settings = RunSettings.of_run(resume)
        else:
            overrides = {"backbone": backbone, "init": init, "epochs": epochs,
                         "epoch_size": epoch_size, "batch_size": batch_size, "lr": lr,
                         "optimizer": optimizer, "schedule": schedule, "balance": balance,
                         "mask_absent_classes": mask_absent,
                         "patience": patience, "device": device, "precision": precision,
                         "workers": workers, "seed": seed, "augment.channel_p": channel_p,
                         "augment.channel_variants": channel_variants,
                         "augment.mixup_alpha": mixup,
                         "augment.frequency_warp": frequency_warp,
                         "augment.speech_margin": speech_margin, "ema_decay": ema_decay,
                         "val_channels": val_channels, "teachers": teachers or None,
                         "teacher_weight": teacher_weight}
            if specaugment is False:
                overrides.update({"augment.specaug_freq": 0, "augment.specaug_time": 0})
            settings = RunSettings.new(
                _split_args(corpora, fold, n_folds, test_speakers, random_test, label_preset,
                            label_overrides, shared, seed),
                config_from_params(params_file, overrides), cache_dir)
        split, result = train_run(settings, resume or out, resume=bool(resume),
                                  on_split=_echo_split)
    except (ValueError, OSError, CheckpointError) as err:
        _fail(err)
    click.echo(f"wrote {result.model_dir} (best epoch {result.best_epoch}, validation "
               f"macro-F1 {result.best_val_macro_f1:.3f})")
    if result.test_metrics:
        m = result.test_metrics
        click.echo(f"test ({split.description}): UA {m['ua']:.3f}  WA {m['wa']:.3f}  "
                   f"macro-F1 {m['macro_f1']:.3f}  weighted-F1 {m['weighted_f1']:.3f}")


@click.command()
@click.option("--model", "model_dir", required=True,
              help="model folder; with --fold all, a pattern such as runs/fold{fold}")
@_split_options
@click.option("--channel", default="clean", show_default=True, metavar="NAME",
              help="pass the test audio through a simulated channel first, e.g. telephone, "
                   "ulaw, alaw, gsm, opus, noise_snr10, babble_snr10, reverb, gain_plus20, "
                   "unseen_narrow (the list: README, Robustness)")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="report folder")
def evaluate(model_dir, corpora, fold, n_folds, test_speakers, random_test, label_preset,
             label_overrides, shared, cache_dir, seed, channel, workers, out):
    """Score the test speakers: metrics.json, confusion.png, reliability.png and report.md.

    `--fold all` evaluates every fold of the protocol (or of --folds N) with the model
    folder named by the {fold} pattern, and reports per-fold figures and mean ± std.
    """
    from callmood.training.evaluate import evaluate_folds

    split_args = _split_args(corpora, fold, n_folds, test_speakers, random_test, label_preset,
                             label_overrides, shared, seed, allow_all=True)
    try:
        metrics = evaluate_folds(model_dir, split_args, out, cache_dir, workers, channel,
                                 on_split=_echo_split)
    except (ValueError, OSError) as err:
        _fail(err)
    if "ece" in metrics:
        click.echo(f"expected calibration error {metrics['ece']:.3f}", err=True)
    std = {k: f" ± {metrics[k + '_std']:.3f}" if k + "_std" in metrics else "" for k in
           ("ua", "wa", "macro_f1", "weighted_f1")}
    click.echo(f"UA {metrics['ua']:.3f}{std['ua']}  WA {metrics['wa']:.3f}{std['wa']}  "
               f"macro-F1 {metrics['macro_f1']:.3f}{std['macro_f1']}  weighted-F1 "
               f"{metrics['weighted_f1']:.3f}{std['weighted_f1']}  → {out}/metrics.json")


@click.command()
@_split_options
@click.option("--trials", type=int, default=20, show_default=True,
              help="trials for the whole study (shared by every worker on it)")
@click.option("--timeout", type=float, help="stop this worker after SECONDS")
@click.option("--study", "study_name", default="callmood", show_default=True)
@click.option("--storage", help="Optuna RDB URL (default: sqlite:///OUT/study.db); a "
                                "postgresql:// URL lets several machines share a study")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median",
              show_default=True)
@click.option("--epochs", type=int, default=15, show_default=True,
              help="epochs per trial (pruning may stop a trial earlier)")
@click.option("--space", "space_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON search space overriding the default one")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False),
              help="base settings that trials start from")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="study folder: study.db, trials/, best_params.json, history.png")
def tune(corpora, fold, n_folds, test_speakers, random_test, label_preset, label_overrides,
         shared, cache_dir, seed, trials, timeout, study_name, storage, pruner, epochs,
         space_file, params_file, out):
    """Optuna search on validation macro-F1 (test speakers are never looked at).

    Several `callmood tune` processes on the same --out/--storage share one study.
    """
    from callmood.training.train import config_from_params
    from callmood.training.tune import SearchSpace, tune_run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    split_args = _split_args(corpora, fold, n_folds, test_speakers, random_test, label_preset,
                             label_overrides, shared, seed)
    try:
        base = config_from_params(params_file, {"epochs": epochs, "seed": seed})
        space = SearchSpace.from_file(space_file) if space_file else SearchSpace()
        best = tune_run(split_args, base, space, out, n_trials=trials, timeout=timeout,
                        study_name=study_name, storage=storage, pruner=pruner,
                        cache_dir=cache_dir, on_split=_echo_split)
    except (ValueError, OSError) as err:
        _fail(err)
    if best is None:
        click.echo("no trial of the study has completed yet")
    else:
        click.echo(f"best trial {best.number}: validation macro-F1 {best.value:.3f}; "
                   f"settings in {out}/best_params.json (use: callmood train --params ...)")


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_dir", help="model folder (default: the bundled model)")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1),
              help="torch threads (default: the cores that other processes leave idle, "
                   "from the load average, at least 1)")
def predict(files, model_dir, fmt, threads):
    """Emotion and per-class probabilities of each audio FILE.

    A file longer than the model's clip is covered by overlapping clips whose
    probabilities are averaged. Unusable files are reported (with --format jsonl as a
    line {"file", "error_kind", "message"}) and make the exit status 1.
    """
    import torch

    from callmood.model.folder import load_model_folder
    from callmood.model.predict import idle_cores, predict_files
    from callmood.options import model_dir_or_bundled
    from callmood.progress import progress

    # threads beyond the idle cores only wait for each other: on a 2-core machine busy
    # with other work, 2 threads were several times slower than 1
    torch.set_num_threads(threads or idle_cores())

    try:
        model = load_model_folder(model_dir_or_bundled(model_dir))
    except (ValueError, OSError) as err:
        _fail(err)
    failed = 0
    # rows are printed as each file is done; the bar (stderr, on a terminal) shows the rest
    rows = progress(predict_files(model, files), total=len(files), unit="file", desc="predict",
                    disable=None if len(files) > 1 else True)
    if fmt == "table":
        click.echo("file\temotion\tconfidence\t" + "\t".join(model.labels))
    for row in rows:
        if "error" in row:
            failed += 1
            click.echo(f"error: {row['error']}", err=True)
            if fmt == "jsonl":  # one line per input, so a script sees every file
                click.echo(json.dumps({"file": row["file"], "error_kind": row["error_kind"],
                                       "message": row["error"]}))
            continue
        if fmt == "jsonl":
            click.echo(json.dumps(row))
        else:
            probs = "\t".join(f"{row['probabilities'][label]:.3f}" for label in model.labels)
            click.echo(f"{row['file']}\t{row['emotion']}\t{row['confidence']:.3f}\t{probs}")
    if failed:
        raise SystemExit(1)


@click.command()
@click.argument("members", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="the ensemble folder to write (must not exist)")
@click.option("--name", required=True, help="the name its scores carry")
@click.option("--average", type=click.Choice(["probabilities", "weights"]),
              default="probabilities", show_default=True,
              help="probabilities: an ensemble folder, a forward pass per member; weights: "
                   "one network whose weights are the members' mean (members fine-tuned "
                   "from one initialisation; its temperature is 1, not fitted)")
def ensemble(members, out, name, average):
    """Make one model of several: an ensemble folder whose scores are the MEMBERS' calibrated
    probabilities averaged, or one model of their averaged weights (model folders that read
    the same features and give the same labels). Any scoring command's --model takes it."""
    from callmood.model.ensemble import write_ensemble_folder, write_weight_average

    write = write_weight_average if average == "weights" else write_ensemble_folder
    try:
        model = write(out, list(members), name)
    except (ValueError, OSError) as err:
        _fail(err)
    held_out = len(model.card.training["split"]["test_speakers"])
    click.echo(f"wrote {out}: {name} (version {model.version}), {len(members)} members; "
               f"{held_out} test speakers no member trained on")


COMMANDS = [train, evaluate, tune, predict, ensemble]
