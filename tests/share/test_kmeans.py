import numpy as np
import pytest
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.share import centroids_of, finalize, is_shared, kmeans_1d, share_module
from deepshrink.train import TrainConfig, fit


def test_kmeans_recovers_planted_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([-1.0, 0.2, 3.0])
    values = np.concatenate([c + 1e-3 * rng.standard_normal(500) for c in centers])
    c, labels = kmeans_1d(values, 3, init="linear")
    np.testing.assert_allclose(c, centers, atol=1e-3)
    assert np.all(labels == np.repeat([0, 1, 2], 500))


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_labels_are_nearest_centroid(init):
    v = np.random.default_rng(1).standard_normal(2000)
    c, labels = kmeans_1d(v, 16, init=init)
    nearest = np.abs(v[:, None] - c[None, :].astype(np.float64)).argmin(1)
    assert np.mean(nearest == labels) > 0.999
    assert len(c) <= 16 and np.all(np.diff(c) > 0)


def test_kmeans_fewer_values_than_clusters_and_bad_args():
    c, labels = kmeans_1d(np.array([1.0, 1.0, 2.0]), 8)
    assert c.tolist() == [1.0, 2.0] and labels.tolist() == [0, 0, 1]
    with pytest.raises(ConfigError):
        kmeans_1d(np.ones(3), 0)
    with pytest.raises(ConfigError):
        kmeans_1d(np.ones(3), 2, init="best")


def test_shared_layer_fine_tuning_keeps_indices_and_zeros():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    lin = model[0]
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.1] = 0
    zeros = lin.weight == 0
    k = share_module(lin, bits=3)
    assert 1 < k <= 7 and is_shared(lin)  # linear init may leave clusters in the pruned gap empty
    idx = lin.parametrizations.weight[0].indices.clone()
    c0 = centroids_of(lin).detach().clone()
    x, y = torch.randn(256, 20), torch.randint(0, 3, (256,))
    fit(model, (x, y), (x, y), TrainConfig(epochs=2, lr=1e-2, keep_best=False), progress=False)
    assert not torch.equal(centroids_of(lin).detach(), c0)  # centroids moved
    assert torch.equal(lin.parametrizations.weight[0].indices, idx)
    finalize(model)
    w = lin.weight.detach()
    assert not is_shared(lin) and torch.all(w[zeros] == 0)
    assert len(torch.unique(w[w != 0])) <= 7


def test_centroid_gradient_is_sum_of_cluster_gradients():
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.1, -1.0, 0.0], [-1.1, 1.0, 0.9, -0.9]]))
    share_module(lin, bits=2)  # 3 centroids + zero
    x = torch.randn(5, 4)
    out = lin(x).sum()
    out.backward()
    idx = lin.parametrizations.weight[0].indices
    dense_grad = x.sum(0).expand(2, 4)  # d(sum(xW^T))/dW
    expected = torch.zeros(len(centroids_of(lin)))
    for j in range(len(expected)):
        expected[j] = dense_grad[idx == j].sum()
    torch.testing.assert_close(centroids_of(lin).grad, expected)


def test_round_to_half_keeps_sharing_and_zeros():
    from deepshrink.share import round_to_half
    from deepshrink.storage import TensorCoding, encode_tensor

    lin = nn.Linear(30, 20)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.05] = 0
    share_module(lin, bits=4)
    finalize(lin)
    zeros = lin.weight == 0
    n_values = len(torch.unique(lin.weight))
    round_to_half(lin)
    w = lin.weight.detach()
    assert torch.equal(w, w.half().float()) and torch.equal(w == 0, zeros)
    assert len(torch.unique(w)) <= n_values
    enc = encode_tensor("b", lin.bias.detach().numpy(), TensorCoding(compress=False))
    assert enc.descriptor["dtype"] == "float16" and enc.nbytes == 2 * 20
