"""Calibrated confidences: Platt scaling fitted on held-out clips, saved with the heads and loaded back; and the
evaluation's calibration report (ECE, reliability table, accuracy against coverage)."""


import numpy as np
import pytest

from speechllm.evaluation.calibration import calibration_report, coverage, reliability, write_reliability
from speechllm.heads import AttributeHeads, apply_calibration, calibrate_heads, fit_heads, fit_platt
from speechllm.metadata import SPEECHLLM_SCHEMA


def test_platt_scaling_maps_overconfidence_to_the_accuracy_seen():
    rng = np.random.default_rng(0)
    confidences = rng.uniform(0.95, 0.999, 400)
    right = rng.uniform(size=400) < 0.6  # a head that claims ~97% and is right 60% of the time
    calibration = fit_platt(confidences, right)
    calibrated = apply_calibration(calibration, confidences)
    assert calibrated.mean() == pytest.approx(0.6, abs=0.05)
    assert reliability(list(zip(calibrated, right)))["ece"] < 0.1 < reliability(list(zip(confidences, right)))["ece"]
    assert np.array_equal(apply_calibration(None, confidences), confidences)


def _features(count: int, seed: int = 0):
    """Two overlapping classes on one feature: a head fitted on them is right about 80% of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(["Female", "Male"], count)
    x = (labels == "Male").astype(np.float32)[:, None] * 1.7 + rng.standard_normal((count, 1)).astype(np.float32)
    return {"pitch": np.repeat(x, 4, axis=1)}, {"Gender": list(labels)}


def test_fit_heads_calibrates_on_held_out_clips_and_the_calibration_is_saved(tmp_path):
    features, labels = _features(200)
    heads = fit_heads(SPEECHLLM_SCHEMA, {"Gender": ["pitch"]}, features, labels)
    calibration = heads.spec["Gender"]["calibration"]
    assert calibration["method"] == "platt" and calibration["clips"] == 40  # every 5th of 200 clips held out
    heads.save(tmp_path)
    loaded = AttributeHeads.load(tmp_path, SPEECHLLM_SCHEMA)
    assert loaded.spec["Gender"]["calibration"] == calibration
    test, truth = _features(300, seed=1)
    probs = loaded.heads["Gender"](test).detach().numpy()  # the head's raw probabilities
    answers = np.array(["Female", "Male"])[probs.argmax(1)]
    calibrated = apply_calibration(calibration, probs.max(1))
    assert np.abs(calibrated - probs.max(1)).max() > 1e-3
    ece = reliability(list(zip(calibrated, answers == np.array(truth["Gender"]))))["ece"]
    assert ece < 0.08  # on clips neither fit saw


def test_predictions_carry_the_calibrated_confidence(tmp_path):
    from speechllm.testing import fixed_heads, tiny_model

    model = tiny_model()
    # a calibration that says: whatever the head claims, it is right 70% of the time
    model.attribute_heads = fixed_heads(model.metadata_schema, {"Gender": "Male"}, confidence=0.999,
                                        calibration={"Gender": {"method": "platt", "a": 0.0, "b": 0.8473}})
    clip = (np.zeros(16000, dtype=np.float32), 16000)
    assert model.generate_meta(clip, fields=["Gender"]).confidences["Gender"] == pytest.approx(0.7, abs=1e-3)
    model.save_pretrained(tmp_path / "m")
    again = type(model).from_pretrained(tmp_path / "m")
    assert again.generate_meta(clip, fields=["Gender"]).confidences["Gender"] == pytest.approx(0.7, abs=1e-3)


def test_few_clips_fit_on_all_and_stay_uncalibrated():
    features, labels = _features(20)
    assert "calibration" not in fit_heads(SPEECHLLM_SCHEMA, {"Gender": ["pitch"]}, features, labels).spec["Gender"]


def test_calibrate_heads_refits_on_a_given_held_out_set():
    features, labels = _features(30)
    heads = fit_heads(SPEECHLLM_SCHEMA, {"Gender": ["pitch"]}, features, labels)
    held_features, held_labels = _features(100, seed=2)
    fitted = calibrate_heads(heads, held_features, held_labels)
    assert heads.spec["Gender"]["calibration"] == fitted["Gender"] and fitted["Gender"]["clips"] == 100


def _row(reference, prediction, confidences, dataset="d"):
    return {"id": "x", "dataset": dataset, "reference": reference, "prediction": prediction,
            "confidences": confidences, "seconds": 1.0, "processing_s": 0.1, "json_valid": True}


def test_calibration_report_scores_speaker_fields_on_speech_only():
    rows = [_row({"SpeechActivity": True, "Gender": "Male"}, {"Gender": "Male"}, {"Gender": 0.9}),
            _row({"SpeechActivity": True, "Gender": "Male"}, {"Gender": "Female"}, {"Gender": 0.7}),
            _row({"SpeechActivity": False, "Gender": "Male"}, {"Gender": "Male"}, {"Gender": 0.95}),  # no speech
            _row({"SpeechActivity": True, "Gender": "Female"}, {"Gender": None}, {"Gender": 0.4})]  # abstained
    report = calibration_report(rows, ["Gender"], SPEECHLLM_SCHEMA)["Gender"]
    assert report["n"] == 2
    assert report["ece"] == pytest.approx((abs(0.9 - 1) + abs(0.7 - 0)) / 2)
    assert report["coverage"][0] == {"min_confidence": 0.0, "coverage": 1.0, "accuracy": 0.5}
    assert coverage([(0.9, True), (0.7, False)], [0.8]) == [{"min_confidence": 0.8, "coverage": 0.5, "accuracy": 1.0}]


def test_reliability_plot_or_table_is_written(tmp_path):
    scores = reliability([(0.95, True), (0.9, False), (0.55, True)])
    name = write_reliability("Gender", scores, tmp_path)
    assert (tmp_path / name).is_file() and name.startswith("reliability-Gender.")
    assert sum(b["n"] for b in scores["bins"]) == 3  # every pair falls in a bin
