"""Preference optimization as a chain of stages, M0 -> M1 -> M2, with held-out evaluation.

What ``examples/dpo.py`` runs (:func:`run_preference_pipeline`):

1. ``dpo.task=instructions``: the rule-checkable task's files are written under
   ``data.prepare_dir`` (:mod:`.synthetic_task`); its train pairs are the preference data
   unless ``data.preference_file`` is given.
2. M0: ``init.checkpoint``, or, when it is null and a task is set, an SFT run on the task's
   chats made on the fly in ``<run.dir>/sft`` (a finished one is reused: its run resumes at
   its last step and trains nothing).
3. Each stage of ``dpo.stages`` (none: one stage, the job itself, in ``<run.dir>``; else
   ``<run.dir>/<name>``) starts from the previous stage's final checkpoint, which is also its
   DPO reference; the reference cache is keyed by that checkpoint
   (:func:`.dpo.cache_path`), so each stage computes its own. An ``online`` stage first
   regenerates its pairs: ``samples_per_prompt`` samples per train prompt from the current
   policy, scored by the task's rule, best and worst kept
   (:func:`.preference_builder.build_preferences`), as EXAONE 3.0's online DPO.
4. With a task, every model is scored on the held-out split (:mod:`.evidence`) and
   ``<run.dir>/eval.json`` gets the accuracies and behaviour rates before and after each
   stage.

Single process (a CPU or one GPU): the evaluation and online sampling build their model in
this process between the training runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.training.config import (
    DPOConfig,
    DPOStageConfig,
    InitConfig,
    RunConfig,
    StageConfig,
    TrainingJobConfig,
)

EVAL_NAME = "eval.json"
EVAL_FORMAT = 1


def _replace(obj, **changes):
    return dataclasses.replace(obj, **changes)


def prepare_task(job: TrainingJobConfig):
    """(job with the task's train pairs and tokenizer filled in, task files); a job without
    ``dpo.task`` comes back unchanged with None."""
    if job.dpo.task is None:
        return job, None
    from nemo_exaone.alignment.synthetic_task import write_task
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.training.data_sources import data_dir

    prepare = data_dir(job.data, Path(job.run.dir))
    files = write_task(prepare, seed=job.dpo.task_seed, heldout_pairs=job.dpo.eval_pairs,
                       sft_compliance=job.dpo.sft_compliance)
    arch = job.model.build_arch(job.init.checkpoint)
    tokenizer_dir = job.data.tokenizer_dir or str(build_tiny_tokenizer(
        prepare, vocab_size=arch.vocab_size))
    data = _replace(job.data, tokenizer_dir=tokenizer_dir,
                    preference_file=job.data.preference_file or str(files.train))
    return _replace(job, data=data), files


def sft_job(job: TrainingJobConfig, sft_file: Path) -> TrainingJobConfig:
    """The on-the-fly SFT run that makes M0: the task's chats, ``dpo.sft_steps`` steps at
    ``dpo.sft_lr`` (cosine to a tenth), into ``<run.dir>/sft``."""
    run_dir = Path(job.run.dir) / "sft"
    return _replace(
        job, run=RunConfig(name=f"{job.run.name}_sft", dir=str(run_dir), seed=job.run.seed),
        stage=StageConfig(name="sft", objective="lm"),
        data=_replace(job.data, source="chat", chat_files=[str(sft_file)],
                      preference_file=None, pack_documents=True, too_long_documents="skip",
                      shuffle=True),
        train=_replace(job.train, max_steps=job.dpo.sft_steps),
        optimizer=_replace(job.optimizer, lr=job.dpo.sft_lr, min_lr=job.dpo.sft_lr / 10),
        schedule=_replace(job.schedule, style="cosine",
                          warmup_steps=min(job.schedule.warmup_steps, job.dpo.sft_steps)),
        init=InitConfig(checkpoint=None), dpo=_replace(job.dpo, stages=[]))


def stage_dpo(job: TrainingJobConfig, stage: DPOStageConfig) -> DPOConfig:
    """The ``dpo`` section one stage trains with: the job's, with the stage's loss."""
    return _replace(job.dpo, stages=[],
                    preference_loss=stage.preference_loss or job.dpo.preference_loss)


def stage_job(job: TrainingJobConfig, stage: DPOStageConfig, run_dir: Path, init: str,
              preference_file: str) -> TrainingJobConfig:
    """One stage's training job: ``job`` started from ``init`` with the stage's changes."""
    optimizer = job.optimizer
    if stage.lr is not None:
        scale = job.optimizer.min_lr / job.optimizer.lr if job.optimizer.lr else 0.0
        optimizer = _replace(optimizer, lr=stage.lr, min_lr=stage.lr * scale)
    train = job.train if stage.max_steps is None else _replace(job.train,
                                                                max_steps=stage.max_steps)
    return _replace(job, run=_replace(job.run, dir=str(run_dir), name=f"{job.run.name}_"
                                      f"{stage.name}"),
                    stage=StageConfig(name=f"dpo_{stage.name}", objective="dpo"),
                    init=InitConfig(checkpoint=init, load="weights"), train=train,
                    optimizer=optimizer, dpo=stage_dpo(job, stage),
                    data=_replace(job.data, preference_file=preference_file))


def _events(run_dir: Path, kind: str) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r.get("event") == kind]


def online_preferences(ckpt: str, job: TrainingJobConfig, stage: DPOStageConfig,
                       prompts_file: Path, out: Path) -> dict:
    """Sample the policy at ``ckpt`` on the task's train prompts (``samples_per_prompt``
    each, at ``temperature``), score every sample by the task's rule (1 follows, 0 not),
    keep (best, worst) where they differ (:func:`.preference_builder.build_preferences`;
    no second reward model: the rule is exact). DPO JSONL at ``out``; returns the build
    report as a dict."""
    import dataclasses as dc

    from nemo_exaone.alignment.preference_builder import (
        PreferenceBuildConfig,
        build_preferences,
        make_sample_fn,
    )
    from nemo_exaone.alignment.synthetic_task import follows_instruction, read_prompts
    from nemo_exaone.data.chat_format import chat_format_for
    from nemo_exaone.data.tokenizer import load_tokenizer
    from nemo_exaone.inference.loading import load_for_generation
    from nemo_exaone.runtime.distributed import destroy_distributed
    from nemo_exaone.runtime.outputs import write_text_atomic

    tokenizer = load_tokenizer(job.data.tokenizer_dir)
    prompts = list(dict.fromkeys(read_prompts(prompts_file)))[:stage.max_prompts]
    build = PreferenceBuildConfig(samples_per_prompt=stage.samples_per_prompt,
                                  temperature=stage.temperature, seed=job.run.seed,
                                  max_new_tokens=max(job.dpo.eval_max_new_tokens, 1))

    def rule_fn(batch: list, responses: list[list[str]]) -> list[list[float]]:
        return [[float(follows_instruction(p, r)) for r in rs]
                for p, rs in zip(batch, responses)]

    try:
        loaded = load_for_generation(ckpt, tokenizer_dir=job.data.tokenizer_dir)
        sample_fn = make_sample_fn(loaded.chunks, tokenizer, build, max_batch_size=64,
                                   chat_format=chat_format_for(loaded.arch.model_type))
        records, report = build_preferences(prompts, sample_fn, rule_fn, None, build)
    finally:
        destroy_distributed()
    if not records:
        raise ConfigError(f"online stage {stage.name}: no prompt of {prompts_file} gave a "
                          f"sample that follows its instruction and one that does not "
                          f"({stage.samples_per_prompt} samples each): raise "
                          "samples_per_prompt or temperature")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    summary = dc.asdict(report)
    summary.pop("settings", None)
    return summary


def _fmt(entry: dict, key: str) -> str:
    values = [entry.get(f"{key}_{when}") for when in ("before", "after")]
    return " -> ".join("-" if v is None else f"{v:.3f}" for v in values)


def run_preference_pipeline(job: TrainingJobConfig):
    """M0 (given or SFT on the fly) -> each stage; eval.json with a task. Returns the last
    stage's :class:`~nemo_exaone.training.loop.TrainResult`."""
    from nemo_exaone.alignment.dpo import loss_config
    from nemo_exaone.alignment.evidence import preference_accuracy, score_checkpoint
    from nemo_exaone.runtime.outputs import write_text_atomic
    from nemo_exaone.training.loop import train

    if job.stage.objective != "dpo":
        raise ConfigError(f"stage.objective={job.stage.objective}: the preference pipeline "
                          "runs dpo stages (stage=dpo data=preference)")
    for dpo in [job.dpo] + [stage_dpo(job, s) for s in job.dpo.stages]:
        loss_config(dpo)  # every stage's loss settings, before minutes of SFT and training
    if job.dpo.task is None and not job.dpo.stages:
        return train(job)  # one DPO run on the given data, as the loop runs it
    job, files = prepare_task(job)
    run_dir = Path(job.run.dir)
    init = job.init.checkpoint
    if init is None and files is not None:
        sft = train(sft_job(job, files.sft))
        if sft.terminated:  # stopped by a signal (after saving): go no further
            return sft
        init = str(run_dir / "sft")
    if init is None and loss_config(job.dpo).uses_reference:
        raise ConfigError(f"dpo.preference_loss={job.dpo.preference_loss} uses the starting "
                          "checkpoint as the reference policy: set init.checkpoint (the SFT "
                          "model) or dpo.task=instructions (M0 is then made by SFT)")
    stages = list(job.dpo.stages) or [DPOStageConfig(name="M1")]
    single = not job.dpo.stages
    scores = {}

    def score(name: str, ckpt: str):
        if files is not None and name not in scores:
            scores[name] = score_checkpoint(ckpt, files.heldout, job.data.tokenizer_dir,
                                            job.train.seq_length, job.dpo.eval_max_new_tokens)
        return scores.get(name)

    previous_name = "M0"
    entries, result = [], None
    if init is not None:
        score(previous_name, init)
    for stage in stages:
        stage_dir = run_dir if single else run_dir / stage.name
        data_file, online = job.data.preference_file, None
        if stage.online:
            if files is None:
                raise ConfigError(f"dpo.stages {stage.name}: online=true needs a rule to "
                                  "score samples with (dpo.task=instructions)")
            data_file = str(stage_dir / "online_pairs.jsonl")
            online = online_preferences(init, job, stage, files.train, Path(data_file))
        cfg = stage_job(job, stage, stage_dir, init, data_file)
        result = train(cfg)
        if result.terminated:  # stopped by a signal (after saving): no eval, no next stage
            return result
        after = score(stage.name, str(stage_dir))
        before = scores.get(previous_name)
        caches = _events(stage_dir, "reference_cache")
        entry = {"name": stage.name, "init": init, "reference": init,
                 "reference_cache": caches[-1]["path"] if caches else None,
                 "loss_type": cfg.dpo.preference_loss, "steps": result.state.step,
                 "preference_file": data_file, "online": online,
                 "checkpoint": result.last_checkpoint}
        if after is not None and before is not None:
            loss_cfg = loss_config(cfg.dpo)
            ref = before.sums if loss_cfg.uses_reference else None
            entry.update({
                "preference_accuracy_before": preference_accuracy(loss_cfg, before.sums, ref),
                "preference_accuracy_after": preference_accuracy(loss_cfg, after.sums, ref),
                "logprob_accuracy_before": before.summary()["logprob_accuracy"],
                "logprob_accuracy_after": after.summary()["logprob_accuracy"],
                "behaviour_rate_before": before.behaviour_rate,
                "behaviour_rate_after": after.behaviour_rate})
        entries.append(entry)
        init, previous_name = str(stage_dir), stage.name
    if files is not None:
        first, last = entries[0], entries[-1]
        report = {"format": EVAL_FORMAT, "task": job.dpo.task, "heldout": str(files.heldout),
                  "heldout_pairs": job.dpo.eval_pairs,
                  "loss_type": last["loss_type"], "steps": sum(e["steps"] for e in entries),
                  "preference_accuracy_before": first.get("preference_accuracy_before"),
                  "preference_accuracy_after": last.get("preference_accuracy_after"),
                  "behaviour_rate_before": first.get("behaviour_rate_before"),
                  "behaviour_rate_after": last.get("behaviour_rate_after"),
                  "stages": entries,
                  "models": {name: s.summary() for name, s in scores.items()}}
        write_text_atomic(run_dir / EVAL_NAME, json.dumps(report, indent=2) + "\n")
        print(f"eval: {run_dir / EVAL_NAME}: " + "; ".join(
            f"{e['name']} ({e['loss_type']}) accuracy {_fmt(e, 'preference_accuracy')}, "
            f"behaviour {_fmt(e, 'behaviour_rate')}" for e in entries), flush=True)
    return result
