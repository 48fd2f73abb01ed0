"""The second edition's declarations of extra per-step inputs and named sizes, as a mixin of the
parser (lstmc/spec.py): `input dt, keep[H], u[K]` and `size K` lines, their checks (an input is a
name of its own, of a declared size) and their typo rules (an input or size never used is an error
at its line). How an input may be used in an expression is checked in lstmc/spec_expr.py."""

from __future__ import annotations

from .spec_errors import did_you_mean, sized_items


class InputDeclarations:
    """`input` and `size` lines (needs the parser's `err`, `check_name`, `_Stmt`-making `stmt`)."""

    _inputs: dict        # name -> (size or None, line, col, size's col)
    _sizes: dict         # name -> (line, col)
    _used_inputs: set

    def d_size(self, rest, lineno, line):
        return self.stmt("size", lineno, line, self._names(rest, lineno, line, "size"))

    def d_input(self, rest, lineno, line):
        """`input dt, keep[H], u[K]`: (name, col, size or None, size's col) per item."""
        out = sized_items(self, rest, lineno, line, "input",
                          "write `input dt` (one number per batch row), `input keep[H]` or `input u[K]` with "
                          "`size K` declared",
                          lambda name: f"declare a named size (`size K`) and write `input {name}[K]`, or write "
                                       f"`input {name}[H]` for the hidden size")
        return self.stmt("input", lineno, line, out)

    def declare(self, st, sizes: dict, inputs: dict) -> None:
        """Record one `size` or `input` line (a name declared twice is an error)."""
        if st.kind == "size":
            for sname, col in st.data:
                if sname in ("H", "I"):
                    raise self.err(f"'{sname}' is built in ({'the hidden' if sname == 'H' else 'the input'} "
                                   "size) and needs no `size` line", st.lineno, col,
                                   fix=f"remove it; write `input u[{sname}]` directly" if sname == "H"
                                   else "remove it; x is the input of size I")
                if sname in sizes:
                    raise self.err(f"size '{sname}' is declared twice (first on line {sizes[sname][0]})",
                                   st.lineno, col, fix="declare each size once")
                sizes[sname] = (st.lineno, col)
        elif st.kind == "input":
            for iname, col, size, scol in st.data:
                if iname in inputs:
                    raise self.err(f"input '{iname}' is declared twice (first on line {inputs[iname][1]})",
                                   st.lineno, col, fix="declare each input once")
                inputs[iname] = (size, st.lineno, col, scol)

    def check_inputs(self, inputs, sizes, state_set, declared, assigns) -> None:
        """An input is a name of its own (not a state, parameter or intermediate), of a declared size."""
        for iname, (size, line, col, scol) in inputs.items():
            clash = ("a state" if iname in state_set else "declared as a parameter" if iname in declared
                     else "assigned as an intermediate" if iname in assigns else None)
            if clash:
                where = (f" (line {declared[iname][0]})" if iname in declared else
                         f" (line {assigns[iname][1].lineno})" if iname in assigns else "")
                raise self.err(f"input '{iname}' is also {clash}{where}", line, col,
                               fix="an input is given at every step and never assigned; use another name for one "
                                   "of them")
            if size is not None and size != "H" and size not in sizes:
                same = [k for k in (*sizes, "H") if k.lower() == size.lower()]
                raise self.err(f"input '{iname}' has size '{size}', which is not declared"
                               + (f" (did you mean `{same[0]}`?)" if same else did_you_mean(size, [*sizes, "H"])),
                               line, scol,
                               fix=f"add a line `size {size}` (its value is given at run time: sizes={{'{size}': 8}}), "
                                   f"or write `input {iname}[H]` for the hidden size")

    def unused_inputs(self, params) -> None:
        """The typo rules for `input` and `size` lines: a declared input or size that nothing uses is an
        error at its line (a misspelt use of an input quietly becomes a learned parameter)."""
        for iname, (size, line, col, _) in self._inputs.items():
            if iname in self._used_inputs:
                continue
            close = [p for p in params if did_you_mean(p, [iname])]
            hint = (f"; '{close[0]}' on line {params[close[0]][1]} is taken as a learned parameter: a misspelling "
                    f"of '{iname}'?" if close else "")
            raise self.err(f"input '{iname}' is declared but never used{hint}", line, col,
                           fix=(f"write '{iname}' where '{close[0]}' is written" if close
                                else "use it in an equation or remove it from the `input` line"))
        used = {size for size, *_ in self._inputs.values()} | set(getattr(self, "_state_sizes", {}).values())
        for sname, (line, col) in self._sizes.items():
            if sname not in used:
                raise self.err(f"size '{sname}' is declared but never used", line, col,
                               fix=f"use it in a state or input declaration (`state h[{sname}]`, `input u[{sname}]`) "
                                   "or remove it")
