"""advnb.plots.explorer: a slider over computed values redraws its image, and under `advnb run` shows a static figure."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from advnb.plots import explorer  # noqa: E402


def _view(calls):
    def view(v):
        calls.append(v)
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, v]); ax.set_ylim(-3, 3)
        return fig
    return view


def test_setting_the_slider_from_python_changes_the_image_and_draws_each_value_once():
    calls = []
    ex = explorer(_view(calls), [-2, 0, 2], value=0, description="λ", static=False)
    first = ex.image.value
    assert first[:4] == b"\x89PNG" and ex.slider.value == 0 and calls == [0]
    ex.slider.value = -2  # a negative value, as paper B's λ
    assert ex.image.value != first and calls == [0, -2]
    ex.slider.value = 0
    assert ex.image.value == first and calls == [0, -2]  # cached: moving back does not draw again
    assert len(set(ex.sweep())) == 3 and ex.slider.value == 0
    assert not plt.get_fignums()  # every drawn figure was closed


def test_static_under_the_runner_displays_the_default_figure_not_the_widget(monkeypatch):
    from IPython.display import Image
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setenv("ADVNB_PLAIN_PROGRESS", "1")
    ex = explorer(_view([]), [1, 2], value=2)
    assert ex.static
    ex._ipython_display_()
    assert len(shown) == 1 and isinstance(shown[0], Image) and shown[0].data == ex.png(2)
    monkeypatch.delenv("ADVNB_PLAIN_PROGRESS")
    ex = explorer(_view([]), [1, 2])
    shown.clear(); ex._ipython_display_()
    assert not ex.static and shown == [ex.widget]


def test_no_values_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        explorer(_view([]), [])
