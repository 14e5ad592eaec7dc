"""advnb.workflow.site: the reports of a scale as an offline site (names parsed, captions from what was run, claims of every
scale side by side, rendered notebooks that load nothing from the network). The browser test is test_site_browser.py."""
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from advnb.workflow import site# noqa: E402
from advnb.core import Run, save_figure, save_table  # noqa: E402


@pytest.mark.parametrize("stem,paper,numbers,label,name,variant", [
    ("A_fig1a_lowpass_and_merged_STD", "A", ["1a"], "Figure 1a", "lowpass_and_merged_STD", ""),
    ("A_fig1_fig6_accuracy_over_frequency_scale_fashionmnist", "A", ["1", "6"], "Figure 1, Figure 6",
     "accuracy_over_frequency_scale_fashionmnist", ""),
    ("D_tableF2_ablation@epochs=40", "D", ["F2"], "Table F2", "ablation", "epochs=40"),
    ("A_table1-5_accuracies", "A", ["1-5"], "Table 1-5", "accuracies", ""),
    ("demo_fig0_demo", None, [], "", "demo_fig0_demo", ""),
])
def test_parse_output_name_reads_paper_numbers_and_variant(stem, paper, numbers, label, name, variant):
    r = site.parse_output_name(stem)
    assert (r["paper"], r["numbers"], r["label"], r["name"], r["variant"]) == (paper, numbers, label, name, variant)


def test_format_value_writes_dicts_as_lines_rounds_and_escapes():
    html = str(site.format_value({"d": 0.0312345, "se": 0.0614, "n": 64, "note": "<b>", "inner": {"k": [1, 2.5]}}))
    assert "<dt>d</dt><dd>0.03123</dd>" in html and "<dd>64</dd>" in html and "&lt;b&gt;" in html and "<b>" not in html
    assert "<dt>k</dt><dd>1, 2.5</dd>" in html and not html.startswith("{")


def test_remote_resources_finds_scripts_styles_and_images_from_other_hosts():
    page = ('<script src="https://cdn.x/a.js"></script><link rel="stylesheet" href="//cdn.y/b.css">'
            '<img src="http://z/c.png"><script src="_static/mathjax/MathJax.js"></script><a href="https://paper.org">ok</a>')
    assert site.remote_resources(page) == ["https://cdn.x/a.js", "//cdn.y/b.css", "http://z/c.png"]
    module = '<script type="module">const m = await import("https://cdn.z/mermaid.esm.min.mjs"); const e = "https://cdn.z/elk.mjs";</script>'
    assert site.remote_resources(module) == ["https://cdn.z/mermaid.esm.min.mjs", "https://cdn.z/elk.mjs"]


def test_describe_run_names_the_data_set_and_the_model_knobs():
    params = {"seed": 0, "datasets": ["fashionmnist"], "arch": "wrn", "arch_kwargs": {"depth": 10}, "epochs": 8,
              "lr": 0.001, "overrides": {}, "n_test": 64}
    ds, models = site.describe_run(params, model_names={"seed", "datasets", "arch", "arch_kwargs", "epochs", "overrides"})
    assert ds == "fashionmnist" and models == "arch wrn, arch_kwargs {depth: 10}, epochs 8"
    assert site.describe_run({"saliency_dataset": "mnist", "width": 4}) == ("mnist", "")  # no models cell: no models


def test_the_models_cells_decide_which_parameters_describe_the_models(tmp_path):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("dataset = 'fashionmnist'\nwidth = 4\nepochs = 2\nn_test = 64")
    m = nbformat.v4.new_code_cell("spec = make_spec(dataset, width=width, epochs=epochs)\nlabel = 'x'")
    p.metadata["tags"], m.metadata["tags"] = ["parameters"], ["models"]
    nb.cells = [p, m, nbformat.v4.new_code_cell("evaluate(spec, n_test)")]
    nbformat.write(nb, str(tmp_path / "f1_demo.ipynb"))
    names = site.model_parameter_names(tmp_path / "f1_demo.ipynb")
    assert {"dataset", "width", "epochs"} <= names and "n_test" not in names
    assert site.describe_run(site.run_parameters(tmp_path / "f1_demo.ipynb"), names) == ("fashionmnist", "width 4, epochs 2")


def test_the_site_is_drawn_from_package_files_and_the_papers_name_themselves():
    assert {"base.html.j2", "macros.html.j2", "index.html.j2", "paper.html.j2", "claims.html.j2",
            "site.css"} == set(site.site_environment().list_templates())
    assert (site.TEMPLATE_DIR / "notebook" / "offline_notebook.html.j2").is_file()
    titles = site.paper_titles()  # from the papers' modules, loaded through the entry points
    assert set("ABCDE") <= set(titles) and titles["C"] == "Learning dynamics and implicit Fourier regularisation"


def _executed_notebook(path, defaults, injected):
    nb = nbformat.v4.new_notebook()
    p, i = nbformat.v4.new_code_cell(defaults), nbformat.v4.new_code_cell(injected)
    m = nbformat.v4.new_code_cell("specs = demo_specs(dataset, epochs=epochs, width=width)")
    p.metadata["tags"], i.metadata["tags"], m.metadata["tags"] = ["parameters"], ["injected-parameters"], ["models"]
    nb.cells = [nbformat.v4.new_markdown_cell("The radius $r=\\sqrt{u^2+v^2}$ of a frequency."), p, i, m]
    nb.metadata["papermill"] = {"parameters": {"scale": path.parent.name}}  # as papermill records what it injected
    nbformat.write(nb, str(path))


def _claim(scale, holds, id="A.3.1.demo", **kw):
    return {"id": id, "paper": "A", "section": "3.1", "statement": "filtering restores accuracy",
            "paper_value": {"peak": 0.512}, "our_value": {"d": 0.03, "se": 0.06}, "holds": holds, "criterion": "d > 2 SE",
            "dataset": "synthetic-cifar10", "notebook": "a1_demo", "notes": "", "recorded_at": "", "scale": scale, **kw}


@pytest.fixture
def demo_reports(tmp_path):
    "A smoke run of one paper-A notebook (a figure with its sidecar, an old figure without one, a table) and ledgers at two scales."
    root = tmp_path / "reports"
    run = Run(notebook="a1_demo", scale="smoke", seed=0, root=root / "smoke")
    run.figures_dir.mkdir(parents=True); run.tables_dir.mkdir(parents=True)
    fig, ax = plt.subplots(figsize=(1, 1)); ax.plot([0, 1])
    save_figure(fig, "curve", paper="A", number="1", run=run); save_figure(fig, "curve", paper="A", number="1b", run=run)
    save_figure(fig, "old", paper="A", number="2", run=run)
    plt.close(fig)
    (run.figures_dir / "A_fig2_old.json").unlink()  # written before the sidecars existed
    save_table(pd.DataFrame({"quantity": ["clean"], "paper (CIFAR-10)": [0.944], "ours": [0.81234]}), "acc", paper="A",
               number=1, run=run)
    _executed_notebook(root / "smoke" / "a1_demo.ipynb", 'dataset = "synthetic-cifar10"\nepochs = 2\nwidth = 8',
                       'dataset = "fashionmnist"\nepochs = 10')
    (root / "smoke" / "a1_demo.html").write_text("<html></html>")
    for scale, rows in [("smoke", [_claim("smoke", True), _claim("smoke", None, id="A.3.1.demo@epochs=40"),
                                   _claim("smoke", True, id="A.3.3.acc.synthetic-cifar10")]),
                        ("quick", [_claim("quick", False), _claim("quick", True, id="A.3.2.other"),
                                   _claim("quick", None, id="A.3.3.acc.fashionmnist", dataset="fashionmnist")])]:
        (root / scale).mkdir(exist_ok=True)
        (root / scale / "claims.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_sidecars_say_what_was_run_and_captions_use_the_run_parameters(demo_reports):
    smoke = demo_reports / "smoke"
    meta = json.loads((smoke / "figures" / "A_fig1_curve.json").read_text())
    assert meta == {"notebook": "a1_demo", "scale": "smoke", "seed": 0, "variant": ""}
    figs = {f["stem"]: f for f in site.outputs(smoke, "figures")}
    assert set(figs) == {"A_fig1_curve", "A_fig1b_curve", "A_fig2_old"}  # the figure without a sidecar is still listed
    f = figs["A_fig1_curve"]
    assert (f["label"], f["notebook"], f["dataset"], f["scale"]) == ("Figure 1", "a1_demo", "fashionmnist", "smoke")
    assert f["models"] == "epochs 10, width 8"  # the injected parameters win over the notebook's defaults
    assert figs["A_fig2_old"]["notebook"] == "" and figs["A_fig2_old"]["page"] == "A"


def test_build_site_writes_every_page_with_the_claims_of_every_scale(demo_reports):
    index = site.build_site(demo_reports, "smoke", ["a1_demo"])
    smoke = demo_reports / "smoke"
    assert index == smoke / "index.html" and (smoke / "_static" / "mathjax" / "MathJax.js").exists()
    for page in ["paper-A.html", "paper-B.html", "paper-E.html", "foundation.html", "claims.html"]:
        assert (smoke / page).exists(), page
    paper = (smoke / "paper-A.html").read_text()
    # figures grouped under their number (the panel folded), captioned with the run; the paper's table column marked
    assert paper.index("Figure 1</h3>") < paper.index("figures/A_fig1b_curve.png") < paper.index("Figure 2</h3>")
    assert "data set fashionmnist" in paper and "models: epochs 10, width 8" in paper
    assert '<th class="paper-col">paper (CIFAR-10)</th>' in paper and "0.8123" in paper
    # claims at this scale, the other scale's verdict beside; values as lines, not JSON
    assert "A.3.1.demo@epochs=40" in paper and "quick: <span class=\"badge does-not-hold\">" in paper
    # each claim links to what its notebook's run drew: the whole figure (not its panel again) and the table; the
    # figure without a sidecar names no notebook, and the variant run drew nothing
    shown = re.findall(r'<tr id="x-A-3-1-demo".*?shown in (.*?)</small>', paper, re.S)
    assert shown == ['<a href="paper-A.html#x-A_fig1_curve">Figure 1</a>, <a href="paper-A.html#x-A_table1_acc">Table 1</a>']
    assert 'id="x-A_fig1_curve"' in paper and 'id="x-A_table1_acc"' in paper  # the links land
    assert "shown in" not in paper.split('id="x-A-3-1-demo-epochs-40"')[1].split("</tr>")[0]
    assert '{"d"' not in paper and "<dt>se</dt><dd>0.06</dd>" in paper
    claims = (smoke / "claims.html").read_text()
    rows = re.findall(r'<tr data-paper="A" data-verdicts="([^"]*)"', claims)
    verdicts = [json.loads(r.replace("&#34;", '"')) for r in rows]
    # one row per claim: the variant under its claim, and an id ending in each scale's own data set is one claim
    assert verdicts == [{"smoke": "holds", "quick": "does not hold"}, {"smoke": "inconclusive"}, {"quick": "holds"},
                        {"smoke": "holds", "quick": "inconclusive"}]
    assert "<small>A.3.3.acc</small>" in claims and "fashionmnist" in claims
    assert claims.count('shown in <a href="paper-A.html#x-A_fig1_curve">Figure 1</a>') == 2  # the two smoke claims of a1_demo
    text = index.read_text()
    assert "Paper A" in text and "a1_demo.html" in text and "3 claims" in text
    for page in smoke.glob("*.html"):
        assert site.remote_resources(page.read_text()) == [], page.name
        if page.name != "a1_demo.html":  # the fixture's stand-in for a rendered notebook; rendered ones: below
            # every page says what smoke is, so that its counts are not read as the papers' results
            assert "its verdicts test the plumbing, not the papers" in page.read_text(), page.name


def test_rendered_notebook_loads_mathjax_from_the_reports_not_a_cdn(demo_reports, tmp_path):
    from advnb.workflow.runner import render_html
    out = render_html(demo_reports / "smoke" / "a1_demo.ipynb", tmp_path / "out" / "a1_demo.html")
    page = out.read_text()
    assert site.remote_resources(page) == [] and site.MATHJAX_URL in page and "$r=\\sqrt{u^2+v^2}$" in page
    assert "its verdicts test the plumbing, not the papers" in page  # papermill's parameters say scale smoke
    assert (tmp_path / "out" / "_static" / "mathjax" / "MathJax.js").exists()
    assert (tmp_path / "out" / "_static" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").exists()


def test_figure_numbers_sort_as_numbers_then_letters():
    assert sorted(["10", "S1", "2", "1a", "1"], key=site._fig_key) == ["1", "1a", "2", "10", "S1"]
