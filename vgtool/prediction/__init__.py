"""The prediction loop shared by ``ground``, ``evaluate``, calibration and ``bench``."""
