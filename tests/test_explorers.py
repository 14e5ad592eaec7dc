"""advnb.plots.explorer: a slider over computed values redraws its image, and under `advnb run` shows a static figure."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import numpy as np  # noqa: E402

from advnb.plots import drawing_change, drawn_arrays, explorer  # noqa: E402


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


def test_static_under_the_runner_shows_several_views_side_by_side_not_the_widget(monkeypatch):
    import base64
    from IPython.display import HTML
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setenv("ADVNB_PLAIN_PROGRESS", "1")
    ex = explorer(_view([]), [-2, -1, 0, 1, 2, 3, 4], value=1, description="λ")
    assert ex.static and ex.frames() == [-2, 0, 1, 2, 4]  # evenly spaced, ends included, and the slider's own value
    ex._ipython_display_()
    assert len(shown) == 1 and isinstance(shown[0], HTML)
    page = shown[0].data
    assert all(base64.b64encode(ex.png(v)).decode() in page and f"λ = {v}</figcaption>" in page for v in ex.frames())
    assert "<script" not in page and base64.b64encode(ex.png(-1)).decode() not in page
    monkeypatch.delenv("ADVNB_PLAIN_PROGRESS")
    ex = explorer(_view([]), [1, 2])
    shown.clear(); ex._ipython_display_()
    assert not ex.static and shown == [ex.widget]


def test_no_values_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        explorer(_view([]), [])


def _image(a):
    fig, ax = plt.subplots()
    ax.imshow(a)
    return fig


def test_drawing_change_is_the_largest_change_of_a_drawn_array_over_its_range():
    a = np.zeros((4, 4)); a[0, 0] = 1.0
    b = a.copy(); b[3, 3] = 0.5
    assert drawing_change(_image(a), _image(a)) == 0.0
    assert drawing_change(_image(a), _image(b)) == 0.5  # one pixel moved by half the range
    assert drawing_change(_image(a), _image(np.zeros((5, 5)))) == 1.0  # another shape: all of it changed
    fig, ax = plt.subplots()
    ax.hist([1, 2, 2, 3], bins=3); ax.hist([0, 5], bins=2, histtype="step"); ax.plot([0, 1], [2, 4])
    heights, line = drawn_arrays(fig)[1], drawn_arrays(fig)[0]
    assert line.tolist() == [2, 4] and heights[:3].tolist() == [1, 2, 1]  # the bars' heights, then the step outline's y
    plt.close("all")


def test_an_explorer_whose_view_ignores_its_value_shows_no_change():
    def stuck(v):
        return _image(np.eye(3))
    ex = explorer(stuck, [1, 2], static=False)
    assert ex.change(1, 2) == 0.0
    assert explorer(lambda v: _image(np.eye(3) * v), [1, 2], static=False).change(1, 2) == 0.5
    plt.close("all")
