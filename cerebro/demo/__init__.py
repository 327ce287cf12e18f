"""The built-in demo: a small EEG-like regressor trained on bundled synthetic data with a planted effect."""

from cerebro.demo.data import PLANTED_CHANNELS, PLANTED_WINDOW, SyntheticEEGDataModule, make_eeg_dataset
from cerebro.demo.model import EEGRegressor

__all__ = ["EEGRegressor", "SyntheticEEGDataModule", "make_eeg_dataset", "PLANTED_CHANNELS", "PLANTED_WINDOW"]
