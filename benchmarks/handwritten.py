"""Hand-written eager PyTorch loops for the cells the benchmarks compare ("what a person writes").

Each takes x [T, B, I] and a dict of parameter tensors (lstmc's names) and returns the output
sequence; autograd provides the backward.
"""

import torch


def peephole_lstm(x, p):
    T, B, _ = x.shape
    H = p["U_i"].shape[0]
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    W = torch.cat([p["W_i"], p["W_f"], p["W_g"], p["W_o"]])
    U = torch.cat([p["U_i"], p["U_f"], p["U_g"], p["U_o"]])
    xw = (x.reshape(T * B, -1) @ W.T).reshape(T, B, 4 * H)
    ys = []
    for t in range(T):
        gi, gf, gg, go = (xw[t] + h @ U.T).chunk(4, 1)
        i = torch.sigmoid(gi + p["p_i"] * c + p["b_i"])
        f = torch.sigmoid(gf + p["p_f"] * c + p["b_f"])
        g = torch.tanh(gg + p["b_g"])
        c = f * c + i * g
        o = torch.sigmoid(go + p["p_o"] * c + p["b_o"])
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys)


def cifg_lstm(x, p):
    T, B, _ = x.shape
    H = p["U_i"].shape[0]
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    W = torch.cat([p["W_i"], p["W_g"], p["W_o"]])
    U = torch.cat([p["U_i"], p["U_g"], p["U_o"]])
    xw = (x.reshape(T * B, -1) @ W.T).reshape(T, B, 3 * H)
    ys = []
    for t in range(T):
        gi, gg, go = (xw[t] + h @ U.T).chunk(3, 1)
        i = torch.sigmoid(gi + p["b_i"])
        g = torch.tanh(gg + p["b_g"])
        o = torch.sigmoid(go + p["b_o"])
        c = (1 - i) * c + i * g
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys)


def gru_v1(x, p):
    T, B, _ = x.shape
    H = p["U_z"].shape[0]
    h = x.new_zeros(B, H)
    W = torch.cat([p["W_z"], p["W_r"], p["W_n"]])
    U = torch.cat([p["U_z"], p["U_r"]])
    xw = (x.reshape(T * B, -1) @ W.T).reshape(T, B, 3 * H)
    ys = []
    for t in range(T):
        xz, xr, xn = xw[t].chunk(3, 1)
        hz, hr = (h @ U.T).chunk(2, 1)
        z = torch.sigmoid(xz + hz + p["b_z"])
        r = torch.sigmoid(xr + hr + p["b_r"])
        n = torch.tanh(xn + (r * h) @ p["U_n"].T + p["b_n"])
        h = (1 - z) * n + z * h
        ys.append(h)
    return torch.stack(ys)


USER_CELL = """
# a user-written cell for the benchmarks: a GRU-like cell with a peephole-style decay state
cell decay_gru
state h, m
z  = sigmoid(W_z @ x + U_z @ h + b_z)
n  = tanh(W_n @ x + U_n @ h + p_n * m + b_n)
m' = 0.9 * m + 0.1 * n
h' = (1 - z) * h + z * n
"""


def decay_gru(x, p):
    T, B, _ = x.shape
    H = p["U_z"].shape[0]
    h = x.new_zeros(B, H)
    m = x.new_zeros(B, H)
    W = torch.cat([p["W_z"], p["W_n"]])
    U = torch.cat([p["U_z"], p["U_n"]])
    xw = (x.reshape(T * B, -1) @ W.T).reshape(T, B, 2 * H)
    ys = []
    for t in range(T):
        gz, gn = (xw[t] + h @ U.T).chunk(2, 1)
        z = torch.sigmoid(gz + p["b_z"])
        n = torch.tanh(gn + p["p_n"] * m + p["b_n"])
        m = 0.9 * m + 0.1 * n
        h = (1 - z) * h + z * n
        ys.append(h)
    return torch.stack(ys)


def slstm(x, p):
    """sLSTM (examples/slstm.cell; Beck et al. 2024): one head, or with U [N, H/N, H/N] (examples/
    slstm_heads.cell) the block-diagonal product as a batched GEMM over heads (torch.bmm)."""
    T, B, _ = x.shape
    gates = ("i", "f", "z", "o")
    W = torch.cat([p[f"W_{g}"] for g in gates])
    if p["U_i"].dim() == 2:
        H = p["U_i"].shape[0]
        U = torch.cat([p[f"U_{g}"] for g in gates])

        def recurrent(h):
            return h @ U.T
    else:
        N, d, _ = p["U_i"].shape
        H = N * d
        U = torch.cat([p[f"U_{g}"] for g in gates], dim=1)          # [N, 4d, d]

        def recurrent(h):
            hu = torch.bmm(h.reshape(B, N, d).transpose(0, 1), U.transpose(1, 2))   # [N, B, 4d]
            return hu.reshape(N, B, 4, d).permute(1, 2, 0, 3).reshape(B, 4 * H)
    h, c, n, m = (x.new_zeros(B, H) for _ in range(4))
    xw = (x.reshape(T * B, -1) @ W.T).reshape(T, B, 4 * H)
    ys = []
    for t in range(T):
        gi, gf, gz, go = (xw[t] + recurrent(h)).chunk(4, 1)
        it, ft = gi + p["b_i"], gf + p["b_f"]
        log_f = torch.nn.functional.logsigmoid(ft)
        m_new = torch.maximum(log_f + m, it)
        i = torch.exp(it - m_new)
        f = torch.exp(log_f + m - m_new)
        c = f * c + i * torch.tanh(gz + p["b_z"])
        n = f * n + i
        h = torch.sigmoid(go + p["b_o"]) * c / n
        m = m_new
        ys.append(h)
    return torch.stack(ys)


def layernorm_lstm(x, p):
    """LayerNorm LSTM (examples/layernorm_lstm.cell; Ba et al. 2016) with F.layer_norm."""
    ln = torch.nn.functional.layer_norm
    T, B, _ = x.shape
    H = p["U_i"].shape[0]
    h, c = x.new_zeros(B, H), x.new_zeros(B, H)
    gates = "ifgo"
    W = torch.cat([p[f"W_{g}"] for g in gates])
    U = torch.cat([p[f"U_{g}"] for g in gates])
    xw = (x.reshape(T * B, -1) @ W.T).reshape(T, B, 4, H)
    xn = ln(xw, (H,))                                    # the input side is normalised for all steps at once
    gx = torch.stack([p[f"gx_{g}"] for g in gates])
    gh = torch.stack([p[f"gh_{g}"] for g in gates])
    b = torch.stack([p[f"b_{g}"] for g in gates])
    ys = []
    for t in range(T):
        hu = ln((h @ U.T).reshape(B, 4, H), (H,))
        pre = gx * xn[t] + gh * hu + b
        i, f, o = torch.sigmoid(pre[:, 0]), torch.sigmoid(pre[:, 1]), torch.sigmoid(pre[:, 3])
        c = f * c + i * torch.tanh(pre[:, 2])
        h = o * torch.tanh(p["gc"] * ln(c, (H,)) + p["bc"])
        ys.append(h)
    return torch.stack(ys)


HANDWRITTEN = {"peephole_lstm": peephole_lstm, "cifg_lstm": cifg_lstm, "gru_v1": gru_v1, "decay_gru": decay_gru,
               "slstm": slstm, "slstm_heads": slstm, "layernorm_lstm": layernorm_lstm}
