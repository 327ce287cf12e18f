"""EEG views of attribution importance: per-channel bars, importance over time in seconds, and a scalp topomap
(MNE-Python, the optional ``eeg`` extra of cerebro-autopsy). Pure functions returning :class:`matplotlib.figure.Figure` objects
built without pyplot, like :mod:`cerebro.report.figures`; ``mne`` is imported only when a montage is used."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cerebro.errors import CerebroConfigError, choice_error, suggest
from cerebro.plain import to_plain
from cerebro.report.figures import bar, new_figure, time_axis

__all__ = ["EEGInfo", "build_eeg_info", "eeg_importance", "channel_bars", "time_course", "topomap", "eeg_figures"]

#: Above this many channels, :func:`channel_bars` shows only the ``AUTO_TOP`` most important ones.
MAX_BARS = 40
AUTO_TOP = 30


def _mne(owner: str) -> Any:
    try:
        import mne
    except ImportError as e:  # optional dependency
        raise CerebroConfigError(f"{owner}: an EEG montage needs MNE-Python: pip install mne (the eeg extra of cerebro-autopsy) ({e})") from e
    return mne


#: MNE 1.13 renamed the ``standard_*`` montages ``colin27_*`` (same positions); accept either name on any MNE.
_RENAMED = {f"standard_{k}": f"colin27_{k}" for k in ("1005", "1020", "alphabetic", "postfixed", "prefixed", "primed")}


def _montage_name(mne: Any, name: str, owner: str) -> str:
    """``name`` as this MNE knows it (old/new ``standard_*``/``colin27_*`` spelling), or a choice error."""
    builtin = mne.channels.get_builtin_montages()
    for candidate in (name, _RENAMED.get(name), {v: k for k, v in _RENAMED.items()}.get(name)):
        if candidate in builtin:
            return candidate
    raise CerebroConfigError(f"{owner}: {choice_error('montage', name, builtin)}")


@dataclass
class EEGInfo:
    """How the rows and columns of a ``(C, T)`` EEG input map to electrodes and seconds (all optional)."""

    channel_names: list[str] | None = None  #: one name per input channel, in input order
    sfreq: float | None = None  #: sampling frequency in Hz
    montage: str | None = None  #: an MNE built-in montage name, e.g. ``"GSN-HydroCel-129"``

    def check(self, n_chans: int, owner: str) -> None:
        """Raise :class:`CerebroConfigError` if this does not fit an input of ``n_chans`` channels."""
        names = self.channel_names
        if names is not None:
            if len(names) != n_chans:
                raise CerebroConfigError(f"{owner}: {len(names)} channel_names given but the input has "
                                         f"{n_chans} channels.")
            dup = sorted(n for n, k in Counter(map(str, names)).items() if k > 1)
            if dup:
                raise CerebroConfigError(f"{owner}: duplicate channel_names {dup[:5]}.")
        if self.sfreq is not None and (isinstance(self.sfreq, bool) or not isinstance(self.sfreq, Real)
                                       or not 0 < self.sfreq < np.inf):
            raise CerebroConfigError(f"{owner}: sfreq must be a positive number of Hz, got {self.sfreq!r}.")
        if self.montage is None:
            return
        mne = _mne(owner)
        montage = _montage_name(mne, self.montage, owner)
        if names is None:
            raise CerebroConfigError(f"{owner}: montage {self.montage!r} needs channel_names (one per input "
                                     "channel, in input order) to place the channels on the scalp.")
        known = mne.channels.make_standard_montage(montage).ch_names
        known_set = set(known)
        missing = [str(n) for n in names if str(n) not in known_set]
        if missing:
            lower = {k.lower(): k for k in known}
            hint = f" Did you mean {lower[missing[0].lower()]!r}?" if missing[0].lower() in lower else \
                suggest(missing[0], known)
            raise CerebroConfigError(
                f"{owner}: {len(missing)} channel_names are not in montage {self.montage!r}: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''} (names are case-sensitive).{hint}")


def eeg_importance(mean_abs_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(channel (C,), time (T,))`` importance of a ``(C, T)`` or ``(1, C, T)`` mean |attribution| map: the mean
    over time and the mean over channels."""
    m = np.asarray(mean_abs_map, dtype=np.float64)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"expected a (C, T) or (1, C, T) map, got shape {m.shape}")
    return m.mean(axis=1), m.mean(axis=0)


def channel_bars(importance: np.ndarray, names: Sequence[str] | None = None, title: str = "",
                 top: int | None = None) -> Figure:
    """Bars of per-channel importance labelled with ``names`` (or indices), in input order. With ``top`` (or
    automatically with more than 40 channels: the top 30) only the ``top`` largest, in descending order."""
    imp = np.asarray(importance, dtype=np.float64).reshape(-1)
    labels = [str(n) for n in names] if names is not None else [str(i) for i in range(imp.size)]
    if len(labels) != imp.size:
        raise ValueError(f"{len(labels)} channel names for {imp.size} channels")
    if top is None and imp.size > MAX_BARS:
        top = AUTO_TOP
    if top is not None:
        order = np.argsort(-imp, kind="stable")[:top]
        title = f"{title} (top {order.size} of {imp.size} channels, sorted)"
        imp, labels = imp[order], [labels[i] for i in order]
    return bar(labels, imp, title, "mean |attribution|")


def time_course(importance: np.ndarray, sfreq: float | None = None, title: str = "") -> Figure:
    """Importance over time; the x axis is in seconds (``arange(T) / sfreq``) when ``sfreq`` is given."""
    imp = np.asarray(importance, dtype=np.float64).reshape(-1)
    fig, ax = new_figure(7.0, 3.5)
    x, label = time_axis(imp.size, sfreq)
    ax.plot(x, imp)
    if not sfreq:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label)
    ax.set_ylabel("mean |attribution|")
    ax.set_title(title)
    return fig


def topomap(importance: np.ndarray, names: Sequence[str], montage: str, title: str = "") -> Figure:
    """Scalp topomap of per-channel importance on an MNE built-in ``montage`` (channel ``names`` in input order)."""
    imp = np.asarray(importance, dtype=np.float64).reshape(-1)
    names = [str(n) for n in names]
    owner = title or "topomap"
    EEGInfo(names, None, montage).check(imp.size, owner)  # never drop unknown channels silently
    mne = _mne(owner)
    info = mne.create_info(names, 100.0, "eeg", verbose=False)
    info.set_montage(_montage_name(mne, montage, owner), verbose=False)
    fig, ax = new_figure(5.0, 4.5)
    im, _ = mne.viz.plot_topomap(imp, info, axes=ax, show=False, cmap="Reds", contours=6)
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean |attribution|")
    ax.set_title(title)
    return fig


def eeg_figures(mean_abs_map: np.ndarray, info: EEGInfo, title: str) -> dict[str, Figure]:
    """``{"channels", "time"[, "topomap"]}`` figures of a ``(C, T)`` / ``(1, C, T)`` mean |attribution| map; the
    topomap only when ``info`` has a montage and channel names. ``info`` is checked against ``C`` first (pass an
    empty :class:`EEGInfo` for layer maps whose rows are not the input channels)."""
    channel, time = eeg_importance(mean_abs_map)
    info.check(channel.size, title)
    figs = {"channels": channel_bars(channel, info.channel_names, f"{title}: importance per channel"),
            "time": time_course(time, info.sfreq, f"{title}: importance over time")}
    if info.montage is not None and info.channel_names is not None:
        figs["topomap"] = topomap(channel, info.channel_names, info.montage, f"{title}: importance on the scalp")
    return figs


def build_eeg_info(spec: Any) -> EEGInfo | None:
    """An :class:`EEGInfo` from the ``eeg`` option: ``None``, an EEGInfo, or ``{channel_names, sfreq, montage}``
    where ``channel_names`` is a list or the path of a text file with one name per line. Checks what it can
    without the input (types, sampling rate, montage and names); the channel count is checked on the samples."""
    if spec is None or isinstance(spec, EEGInfo):
        return spec
    spec = to_plain(spec, "`eeg`")
    if not isinstance(spec, dict):
        raise CerebroConfigError(f"`eeg` must be a mapping with channel_names, sfreq and montage, got {spec!r}")
    keys = ("channel_names", "sfreq", "montage")
    for key in spec:
        if key not in keys:
            raise choice_error("eeg option", key, keys)
    names = spec.get("channel_names")
    if isinstance(names, str):
        try:
            with open(names, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except (OSError, ValueError) as err:
            raise CerebroConfigError(f"`eeg.channel_names`: cannot read the channel-name file {names!r}: {err}")
    if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, int)) for n in names)):
        raise CerebroConfigError(f"`eeg.channel_names` must be a list of names or a file path, got {names!r}")
    montage = spec.get("montage")
    if montage is not None and not isinstance(montage, str):
        raise CerebroConfigError(f"`eeg.montage` must be a montage name, got {montage!r}")
    info = EEGInfo([str(n) for n in names] if names is not None else None, spec.get("sfreq"), montage)
    info.check(len(info.channel_names) if info.channel_names else 0, "eeg")
    return info
