"""Pass/fail thresholds per precision, kept in one place.

Parity is measured on pose heatmaps (values about 0..1) against the PyTorch model the
artifact came from; keypoint agreement is the share of decoded keypoints within 5% of
the person's box size of the reference's; the AP drop is against that same reference.
"""
from __future__ import annotations

THRESHOLDS: dict[str, dict[str, float]] = {
    # float32 runtimes differ from PyTorch only by summation order
    "fp32": {"max_abs": 1e-3, "min_cosine": 0.9999, "min_keypoint_agreement": 0.99, "max_ap_drop": 0.005},
    # fp16 weights/activations: ~3 decimal digits
    "fp16": {"max_abs": 3e-2, "min_cosine": 0.999, "min_keypoint_agreement": 0.97, "max_ap_drop": 0.01},
    # bf16: ~2 decimal digits
    "bf16": {"max_abs": 1e-1, "min_cosine": 0.99, "min_keypoint_agreement": 0.9, "max_ap_drop": 0.03},
    # int8: one quantization step per layer adds up; the task metric is what counts
    "int8": {"max_abs": 5e-1, "min_cosine": 0.95, "min_keypoint_agreement": 0.8, "max_ap_drop": 0.05},
}


def failures(precision: str, parity: dict, ap_drop: float | None) -> list[str]:
    """The thresholds a result breaks (empty list: passed)."""
    t = THRESHOLDS[precision]
    out = []
    if parity["max_abs"] > t["max_abs"]:
        out.append(f"max_abs {parity['max_abs']:.3g} > {t['max_abs']:g}")
    if parity["cosine"] < t["min_cosine"]:
        out.append(f"cosine {parity['cosine']:.5f} < {t['min_cosine']:g}")
    if parity["keypoint_agreement"] < t["min_keypoint_agreement"]:
        out.append(f"keypoint agreement {parity['keypoint_agreement']:.3f} < {t['min_keypoint_agreement']:g}")
    if ap_drop is not None and ap_drop > t["max_ap_drop"]:
        out.append(f"AP drop {ap_drop:.4f} > {t['max_ap_drop']:g}")
    return out
