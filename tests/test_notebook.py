"""The example notebook runs top to bottom in a fresh Jupyter kernel (offline), and is committed
clean. ``python3`` is the kernel ipykernel ships; jupyter_client starts it with this very
interpreter (``sys.executable``), so a fresh ``pip install -e ".[dev]"`` needs no set-up."""

from __future__ import annotations

from pathlib import Path

import nbclient  # in the dev extra, with nbformat and ipykernel
import nbformat

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "swap_adapters.ipynb"
KERNEL = "python3"


def read() -> "nbformat.NotebookNode":
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_clean():
    notebook = read()
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"code cells {dirty} have outputs; clear them before committing"
    assert notebook.metadata.kernelspec.name == KERNEL


def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    assert KERNEL in KernelSpecManager().find_kernel_specs(), "ipykernel's python3 kernel is missing"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the kernel inherits the environment: no network
    notebook = read()
    client = nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first cell that fails
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors
    figures = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 3, "the photo figure, the proxy reconstructions / bit maps and the segmentation figures should show inline"
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    for name in ("human", "cls", "seg"):
        assert f"{name:>5}: " in printed and "bpp" in printed
    assert "same bytes: True" in printed
    assert printed.count("On this picture the cls adapters spend") == 2  # the text states what its own pictures show
    assert "of 4 crops against" in printed and "original: Egyptian cat" in printed  # EfficientNet-Lite0 on the photo crops
    assert not list(tmp_path.iterdir()), "the notebook should write no files"
