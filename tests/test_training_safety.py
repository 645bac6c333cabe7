"""Loss-spike detection and the non-finite message (the loop's use is in test_training_loop)."""

from __future__ import annotations

from nemo_exaone.training.safety import LossSpikeDetector, nonfinite_message


def test_spike_is_flagged_against_the_running_median_and_kept_out_of_it():
    detector = LossSpikeDetector(factor=5.0, window=10, min_history=3)
    assert [detector.update(x)[0] for x in (9.0, 8.0, 7.0)] == [False] * 3  # warming up
    assert detector.update(6.0) == (False, 8.0)
    spike, median = detector.update(40.0)
    assert spike and median == 7.5
    assert detector.update(5.5) == (False, 7.5)  # the spike did not raise the median


def test_first_losses_are_never_spikes_and_factor_zero_disables():
    detector = LossSpikeDetector(factor=5.0, window=10, min_history=5)
    assert not any(detector.update(x)[0] for x in (1.0, 100.0, 1.0, 1.0))
    off = LossSpikeDetector(factor=0.0)
    assert not any(off.update(x)[0] for x in [1.0] * 10 + [1e6])


def test_nonfinite_message_names_step_and_checkpoint():
    text = nonfinite_message(7, float("nan"), float("inf"), "safety.on_nonfinite=stop",
                             "runs/x/checkpoints/iter_0000006")
    assert "step 7" in text and "iter_0000006" in text and "no update was applied" in text
    assert "no checkpoint was written yet" in nonfinite_message(1, 1.0, float("nan"), "r", None)
