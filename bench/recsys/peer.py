#!/usr/bin/python3
"""SciPy peer for the recsys rebuild benchmark (run by bench/recsys/main.go).

Computes the same weighted cosine top-K as recsys, the way a data scientist
would: build a sparse matrix, scale columns by sqrt(a_t), normalise rows,
multiply X @ X.T in row blocks, densify each block and argpartition it.
Both sides: users (rows of X) and items (rows of X.T).

Run with Debian's /usr/bin/python3 (numpy, scipy). Prints one JSON object of
timings on stdout and writes the users' top-K similarities for checking.
"""
import argparse
import csv
import json
import sys
import time

import numpy as np
import scipy.sparse as sp


def load(path, weights):
    users, items = {}, {}
    rows, cols, vals = [], [], []
    with open(path, newline="") as f:
        r = csv.reader(f)
        head = [h.strip().lower() for h in next(r)]
        iu, ii, ie, iv = head.index("user"), head.index("item"), head.index("event"), head.index("value")
        for rec in r:
            u = users.setdefault(rec[iu], len(users))
            i = items.setdefault(rec[ii], len(items))
            v = float(rec[iv]) if rec[iv] else 1.0
            rows.append(u)
            cols.append(i)
            vals.append(weights[rec[ie]] * v)
    x = sp.coo_matrix((np.array(vals, dtype=np.float64), (rows, cols)), shape=(len(users), len(items)))
    return x.tocsr().astype(np.float32)  # sums repeated (user, item) pairs


def feature_weights(x, scheme):
    n_rows = x.shape[0]
    df = np.diff(x.tocsc().indptr).astype(np.float64)  # rows having each feature
    if scheme == "none":
        return np.ones(x.shape[1])
    if scheme == "idf":
        return np.log1p(n_rows / np.maximum(df, 1))
    if scheme == "bm25":
        return np.maximum(0, np.log1p((n_rows - df + 0.5) / (df + 0.5)))
    raise SystemExit("unknown weighting " + scheme)


def topk_cosine(x, a, k, block):
    """Top-k rows by weighted cosine for every row of x, sims > 0 only."""
    xw = (x @ sp.diags(np.sqrt(a).astype(np.float32))).tocsr()
    norms = np.sqrt(np.asarray(xw.multiply(xw).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    xn = (sp.diags(inv.astype(np.float32)) @ xw).tocsr()
    xt = xn.T.tocsr()
    n = x.shape[0]
    k = min(k, n - 1)
    ids = np.empty((n, k), dtype=np.int32)
    sims = np.empty((n, k), dtype=np.float32)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        s = (xn[lo:hi] @ xt).toarray()
        s[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf  # not your own neighbour
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        ids[lo:hi] = np.take_along_axis(part, order, axis=1)
        sims[lo:hi] = np.take_along_axis(top, order, axis=1)
    sims[~(sims > 0)] = np.nan  # pruned: keep positive similarities only
    return ids, sims


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--csv", required=True)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--weighting", default="idf")
    p.add_argument("--weights", required=True, help="event weights as JSON")
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--out", required=True, help="file for the users' top-K sims (float32, rows x k)")
    args = p.parse_args()

    # Wall and CPU time per phase: on a shared host CPU time shows the work.
    clock = lambda: (time.perf_counter(), time.process_time())
    t0 = clock()
    x = load(args.csv, json.loads(args.weights))
    t1 = clock()
    _, user_sims = topk_cosine(x, feature_weights(x, args.weighting), args.k, args.block)
    t2 = clock()
    xt = x.T.tocsr()
    topk_cosine(xt, feature_weights(xt, args.weighting), args.k, args.block)
    t3 = clock()
    user_sims.astype("<f4").tofile(args.out)
    json.dump({"load_s": t1[0] - t0[0], "users_s": t2[0] - t1[0], "items_s": t3[0] - t2[0],
               "users_cpu_s": t2[1] - t1[1], "items_cpu_s": t3[1] - t2[1],
               "users": x.shape[0], "items": x.shape[1], "nnz": int(x.nnz), "k": user_sims.shape[1]}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
