"""advnb.plots: images to RGB, heat-map colour scales, and multi-panel figures saved whole and per panel."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from advnb import core, plots


def test_to_rgb_repeats_grey_transposes_rgb_and_clips():
    grey = torch.tensor([[[0.2, -0.5], [1.7, 0.9]]])
    g = plots.to_rgb(grey)
    assert g.shape == (2, 2, 3)
    assert np.allclose(g[..., 0], g[..., 1]) and np.allclose(g[..., 0], g[..., 2])
    assert np.allclose(g[..., 0], [[0.2, 0.0], [1.0, 0.9]])
    rgb = torch.rand(3, 4, 5)
    r = plots.to_rgb(rgb)
    assert r.shape == (4, 5, 3)
    assert r[1, 2, 0] == pytest.approx(float(rgb[0, 1, 2])) and r[3, 4, 2] == pytest.approx(float(rgb[2, 3, 4]))
    assert np.allclose(plots.to_rgb(rgb.numpy()), r)


@pytest.mark.parametrize("shape", [(2, 4, 4), (1, 1, 4, 4), (4, 4)])
def test_to_rgb_names_the_shape_it_cannot_draw(shape):
    with pytest.raises(ValueError, match=r"\(C, H, W\).*" + str(shape[0])):
        plots.to_rgb(torch.zeros(shape))


def test_show_image_draws_exactly_the_clipped_image_without_ticks():
    fig, ax = plt.subplots()
    img = torch.rand(1, 6, 6) * 1.4 - 0.2
    plots.show_image(ax, img, "title", fontsize=7)
    assert np.allclose(np.asarray(ax.images[0].get_array()), plots.to_rgb(img))
    assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    assert ax.get_title() == "title" and ax.title.get_fontsize() == 7
    plt.close(fig)


def test_show_heatmap_signed_scale_is_centred_and_unsigned_uses_vlim():
    fig, (a1, a2, a3) = plt.subplots(1, 3)
    a = torch.tensor([[-1.0, 0.25], [0.5, 3.0]])
    assert plots.show_heatmap(a1, a, signed=True).get_clim() == (-3.0, 3.0)
    assert plots.show_heatmap(a2, a, signed=True, vlim=0.5).get_clim() == (-0.5, 0.5)
    assert plots.show_heatmap(a3, a, vlim=(0.0, 10.0), colorbar=False).get_clim() == (0.0, 10.0)
    with pytest.raises(ValueError, match="2-D"):
        plots.show_heatmap(a1, torch.zeros(2, 2, 2))
    plt.close(fig)


def test_panel_figure_saves_the_whole_figure_and_each_panel(tmp_path):
    run = core.start_run("plots", scale="smoke", seed=0, reports_dir=tmp_path)
    calls = []

    def draw(tag):
        def f(ax):
            calls.append(tag); ax.plot([0, 1], [1, 0], label=tag)
        return f

    panels = [("a", "first", draw("a")), ("b", "second", draw("b"), "custom"), ("c", "third", draw("c"))]
    fig = plots.panel_figure(panels, "5", "Figure 5", "curves", paper="A", ncols=2, legend=True)
    assert sorted(calls) == ["a", "a", "b", "b", "c", "c"]  # each panel drawn on the whole figure and alone
    names = sorted(p.name for p in run.figures_dir.glob("*.png"))
    assert names == ["A_fig5_curves.png", "A_fig5a_curves_a.png", "A_fig5b_curves_custom.png", "A_fig5c_curves_c.png"]
    axes = fig.axes
    assert [ax.get_title() for ax in axes[:3]] == ["(a) first", "(b) second", "(c) third"]
    assert not axes[3].axison  # the unused fourth cell of the 2 x 2 grid is blank
    assert fig.legends and [t.get_text() for t in fig.legends[0].get_texts()] == ["a"]
    plt.close(fig)


def test_image_grid_scales_each_cell_on_its_own_and_labels_rows_and_columns():
    cells = [[torch.tensor([[-1.0, 2.0]]), torch.tensor([[0.1, 0.3]])], [torch.ones(1, 2, 2) * 0.5, torch.zeros(3, 2, 2)]]
    fig = plots.image_grid(cells[:1], ["k1"], ["V", "VR"], "t", signed=True)
    a, b = fig.axes
    assert a.images[0].get_clim() == (-2.0, 2.0) and b.images[0].get_clim() == pytest.approx((-0.3, 0.3))
    assert a.get_title() == "V" and a.get_ylabel() == "k1" and b.get_ylabel() == ""
    fig2 = plots.image_grid(cells[1:], ["r"], ["grey", "rgb"], "images")  # (C, H, W) images drawn as images
    assert fig2.axes[0].images[0].get_array().shape == (2, 2, 3)
    fig3 = plots.image_grid(cells[:1], ["k1"], ["δ", "spectrum"], "per column", signed=[True, False], cmap=[None, "magma"])
    a, b = fig3.axes
    assert a.images[0].get_clim() == (-2.0, 2.0) and a.images[0].get_cmap().name == "RdBu_r"
    assert b.images[0].get_clim() == pytest.approx((0.1, 0.3)) and b.images[0].get_cmap().name == "magma"
    with pytest.raises(ValueError, match="2 columns but 3"):
        plots.image_grid(cells[:1], ["k1"], ["a", "b"], "t", signed=[True, False, True])
    plt.close("all")


def test_mosaic_figure_tiles_rows_and_columns_in_order():
    imgs = torch.zeros(2, 3, 1, 4, 4)
    for r in range(2):
        for c in range(3):
            imgs[r, c] = (r * 3 + c) / 10
    fig = plots.mosaic_figure(imgs, ["a", "b"], ["x", "y", "z"], "m", pad=1)
    ax = fig.axes[0]
    arr = np.asarray(ax.images[0].get_array())
    assert arr.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    for r in range(2):
        for c in range(3):  # the centre pixel of tile (r, c)
            assert arr[1 + 5 * r + 2, 1 + 5 * c + 2, 0] == pytest.approx((r * 3 + c) / 10)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    plt.close("all")
