"""The tape of :mod:`rnnmem.models.nondeterministic`: two autograd functions that write
columns of the inner-weight table into a preallocated buffer and read the pop term's
block out of it, with gradients accumulated in a second buffer (see that module's
docstring for the layout and for why a scalar token orders their backward passes)."""

from __future__ import annotations

import torch

__all__ = ["TILE_ROWS"]


class _TapeWrite(torch.autograd.Function):
    """Copy a column into the tape; backward returns what the tape's readers accumulated
    for it (and clears it, so that the graph can be run backward again)."""

    @staticmethod
    def forward(ctx, column, token, tape, rows, slot):
        values, grads = tape
        values[:, :, rows[0]:rows[1], :, :, slot, :] = column
        ctx.tape_grads, ctx.rows, ctx.slot = grads, rows, slot
        return token.new_zeros(())

    @staticmethod
    def backward(ctx, g_token):
        view = ctx.tape_grads[:, :, ctx.rows[0]:ctx.rows[1], :, :, ctx.slot, :]
        g = view.clone()
        view.zero_()
        return g, torch.zeros_like(g_token), None, None, None


class _PopTerm(torch.autograd.Function):
    r"""The pop term :math:`P[i][q,x,c \to r,y] = \sum_{k,t} \tilde\gamma[i \to k][q,x,c \to
    t,y]\, \gamma'[k][t,y \to r]` read from the tape, as strided matrix products batched
    over ``(B, y)``.

    ``tiles``: ``(r0, r1, slot, p, off)``, each the product of tape rows ``rows[0] + r0 ..
    rows[0] + r1`` and ``p`` column slots from ``slot`` with ``gprime[:, :, off:off + p]``,
    added into output rows ``r0 .. r1``. Entry :math:`(i, k)` of the block vanishes for
    :math:`i \ge k`, so a row chunk needs only the columns from its own start on (about
    half the block is skipped); a window's columns may wrap around the slots (two pieces).
    """

    @staticmethod
    def forward(ctx, gprime, token, tape, rows, tiles):
        values = tape[0]
        B, S, _, N, C, _, Q = values.shape
        n, NC = rows[1] - rows[0], N * C
        out = gprime.new_zeros(B * S, n * NC, Q)
        for r0, r1, slot, p, off in tiles:
            blk = values[:, :, rows[0] + r0:rows[0] + r1, :, :, slot:slot + p, :].view(
                B * S, (r1 - r0) * NC, p * Q)  # a view: the strides allow the merges
            gp = gprime[:, :, off:off + p].reshape(B * S, p * Q, Q)
            out[:, r0 * NC:r1 * NC].add_(torch.bmm(blk, gp))
        ctx.save_for_backward(gprime)
        ctx.tape, ctx.rows, ctx.tiles = tape, rows, tiles
        return out.view(B, S, n, N, C, Q)

    @staticmethod
    def backward(ctx, gout):
        (gprime,) = ctx.saved_tensors
        values, grads = ctx.tape
        B, S, _, N, C, _, Q = values.shape
        n, NC, base = ctx.rows[1] - ctx.rows[0], N * C, ctx.rows[0]
        g2 = gout.reshape(B * S, n * NC, Q)
        g_gprime = torch.zeros_like(gprime)
        for r0, r1, slot, p, off in ctx.tiles:
            blk = values[:, :, base + r0:base + r1, :, :, slot:slot + p, :].view(
                B * S, (r1 - r0) * NC, p * Q)
            gp = gprime[:, :, off:off + p].reshape(B * S, p * Q, Q)
            g_rows = g2[:, r0 * NC:r1 * NC]
            g_gprime[:, :, off:off + p] += (blk.transpose(1, 2) @ g_rows).view(B, S, p, Q, Q)
            # accumulate in place (a strided GEMM output: no temporary of the block's size)
            gblk = grads[:, :, base + r0:base + r1, :, :, slot:slot + p, :].view(
                B * S, (r1 - r0) * NC, p * Q)
            gblk.baddbmm_(g_rows, gp.transpose(1, 2))
        return g_gprime, None, None, None, None


#: rows per chunk of the pop block (smaller: more, smaller products and less of the zero
#: triangle read; tests lower it to exercise the chunking at small sizes)
TILE_ROWS = 24


def _pop_tiles(nk: int, first: int, K: int) -> tuple:
    """Tiles of the pop block (see :class:`_PopTerm`): ``nk`` rows and columns, the columns
    in slots ``first, first + 1, ...`` modulo ``K``. Without wrap-around, row chunks of about
    :data:`TILE_ROWS` rows each (at most 8 chunks) take only the columns from their own
    start on."""
    if first + nk <= K:
        m = max(1, min(8, nk // TILE_ROWS))
        cuts = [round(a * nk / m) for a in range(m + 1)]
        return tuple((a0, a1, first + a0, nk - a0, a0) for a0, a1 in zip(cuts, cuts[1:]))
    head = K - first
    return ((0, nk, first, head, 0), (0, nk, 0, nk - head, head))
