"""Writes OUT/report.json and OUT/report.md from a gpu-check.sh run.

    python3 report.py OUT_DIR DRY(0|1) ELAPSED_S BUDGET_S MANIFEST.json

Reads OUT/steps.tsv (name, status, rc, seconds, log, command per check)
and the JSON lines the checks wrote (selftest.jsonl, verify.jsonl,
bench-kernels-*.jsonl, torch.jsonl).
"""
import json
import os
import sys


def jsonl(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return rows


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    out, dry, elapsed, budget, manifest = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    steps = []
    with open(os.path.join(out, "steps.tsv")) as f:
        for line in f:
            name, status, rc, secs, log, cmd = line.rstrip("\n").split("\t", 5)
            tail = ""
            if log != "-" and os.path.exists(os.path.join(out, log)) and status != "pass":
                with open(os.path.join(out, log), errors="replace") as lf:
                    tail = "".join(lf.readlines()[-8:])
            steps.append(dict(name=name, status=status, rc=rc, seconds=float(secs), command=cmd, log=log, tail=tail))
    selftest = jsonl(os.path.join(out, "selftest.jsonl"))
    verify = jsonl(os.path.join(out, "verify.jsonl"))
    kernels = {p: jsonl(os.path.join(out, f"bench-kernels-{p}.jsonl")) for p in ("mnist", "cifar10")}
    torch = jsonl(os.path.join(out, "torch.jsonl"))
    multigpu = jsonl(os.path.join(out, "multigpu.jsonl"))
    bench_step = {}
    for name in sorted(os.listdir(out)):
        if name.startswith("bench-step") and name.endswith(".txt"):
            with open(os.path.join(out, name), errors="replace") as f:
                bench_step[name[:-4]] = f.read()[-4000:]
    try:
        with open(manifest) as f:
            man = json.load(f)
    except (OSError, json.JSONDecodeError):
        man = {}
    count = lambda s: sum(1 for x in steps if x["status"] == s)
    report = dict(
        dry_run=dry, elapsed_s=elapsed, budget_s=budget, bundle=man,
        summary={s: count(s) for s in ("pass", "fail", "timeout", "skipped", "planned")},
        steps=steps,
        selftest=dict(rows=len(selftest), failed=[r for r in selftest if not r.get("pass")], all=selftest),
        verify=verify,
        bench_kernels={p: dict(kernels=[l for l in v if l.get("kind") == "kernel"],
                               step=next((l for l in v if l.get("kind") == "step"), None)) for p, v in kernels.items()},
        bench_step=bench_step,
        torch=torch,
        multigpu=multigpu,
    )
    with open(os.path.join(out, "report.json.tmp"), "w") as f:
        json.dump(report, f, indent=1)
    os.replace(os.path.join(out, "report.json.tmp"), os.path.join(out, "report.json"))

    md = [f"# gpu-check {'dry run (emulator and CPU)' if dry else 'on the GPU'}", ""]
    md.append(f"bundle: commit {man.get('commit', '?')}, {man.get('profile', '?')} build, {man.get('bytes', 0) / 2**20:.1f} MiB; "
              f"run took {elapsed} s of a {budget} s budget.")
    md.append("")
    md.append("summary: " + ", ".join(f"{v} {k}" for k, v in report["summary"].items()))
    md += ["", "## Checks", "", "| check | status | seconds | command |", "| --- | --- | ---: | --- |"]
    for s in steps:
        cmd = s["command"].replace("|", "\\|")
        md.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | `{cmd}` |")
    for m in multigpu:
        md += ["", "## Several GPUs (1 vs 2 ranks, same global batch)", "",
               "| run | images/s | scaling | max rel. loss diff | max rel. grad-norm diff | max weight diff (lr) |",
               "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in m.get("runs", []):
            md.append(f"| {r['run']} | {r['images_per_s']} | {r['scaling']} | {r['max_rel_loss_diff']} | "
                      f"{r['max_rel_grad_norm_diff']} | {r['max_weight_diff_lr']} |")
    bad = [s for s in steps if s["status"] in ("fail", "timeout")]
    for s in bad:
        md += ["", f"### {s['name']} ({s['status']}, rc {s['rc']})", "", "```", s["tail"].rstrip(), "```"]
    if selftest:
        md += ["", "## Self-test", "", f"{len(selftest)} ops, {len(report['selftest']['failed'])} failed; worst relative errors:", "",
               "| family | op | cases | max rel err | bound | pass |", "| --- | --- | ---: | ---: | --- | --- |"]
        worst = sorted(selftest, key=lambda r: -(r.get("max_rel_err") or 0))[:12]
        for r in worst:
            md.append(f"| {r['family']} | {r['op']} | {r['cases']} | {fmt(r.get('max_rel_err'), '.2e')} | {r['bound']} | {r['pass']} |")
    if verify:
        md += ["", "## verify-step", "", "| file | device | output | loss | worst grad | pass |", "| --- | --- | ---: | ---: | ---: | --- |"]
        for v in verify:
            md.append(f"| {os.path.basename(v['file'])} | {v['device']} | {v['output_rel_err']:.2e} | {v['loss_rel_err']:.2e} | "
                      f"{v['worst_grad_rel_err']:.2e} ({v['worst_grad']}) | {v['pass']} |")
    for p, b in report["bench_kernels"].items():
        st = b["step"]
        if not st:
            continue
        est = st["h100_estimate_us"]
        md += ["", f"## bench kernels, {p} (batch {st['batch']}, {st['device']}, {st['timing']})", "",
               f"training step: {st['train_step']['launches']} launches, {st['train_step']['allocs']} allocations, "
               f"{st['train_step']['frees']} frees, {st['train_step']['dtoh']} reads back; sampling step: {st['sample_step']['launches']} launches.",
               f"H100 floor {st['h100_floor_sum_us']:.0f} us; estimate {est['current_engine']:.0f} us (today's engine), "
               f"{est['eager_no_alloc']:.0f} us (eager, no allocation), {est['cuda_graph']:.0f} us (CUDA graph)"
               + (f"; measured kernel sum {st['measured_kernel_sum_us']:.0f} us" if st.get("measured_kernel_sum_us") is not None else "") + ".",
               "", "| op | pass | sizes | /step | time us | GFLOP/s | GB/s | % peak | H100 floor us | launches |",
               "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k in b["kernels"]:
            launches = (k.get("counts") or {}).get("launches")
            md.append(f"| {k['op']} | {k['pass']} | {k['sizes']} | {k['per_step']} | {fmt(k['time_us'], '.1f')} | "
                      f"{fmt(k['gflops'], '.1f')} | {fmt(k['gbps'], '.1f')} | {fmt(k['pct_of_peak'], '.1f')} | "
                      f"{k['h100_floor_us']:.2f} | {fmt(launches, 'd')} |")
    if bench_step:
        md += ["", "## bench step", ""]
        for name, text in bench_step.items():
            md += [f"### {name}", "", "```", text.rstrip(), "```"]
    if torch:
        md += ["", "## PyTorch on the same GPU (CUDA events, median)", "",
               "| config | mode | step | batch | median ms | img/s | peak MB |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        for t in torch:
            if "error" in t:
                md.append(f"| {t['config']} | {t['mode']} | {t['step']} | {t['batch']} | error: {t['error'][:80]} | | |")
            else:
                md.append(f"| {t['config']} | {t['mode']} | {t['step']} | {t['batch']} | {t['median_s'] * 1e3:.2f} | "
                          f"{t['img_per_s']:.0f} | {t['peak_mem_mb']} |")
    planned = [s for s in steps if s["status"] == "planned"]
    if planned:
        md += ["", "## Checks a GPU run adds (planned, not run here)", ""]
        md += [f"- {s['name']}: `{s['command']}`" for s in planned]
    with open(os.path.join(out, "report.md.tmp"), "w") as f:
        f.write("\n".join(md) + "\n")
    os.replace(os.path.join(out, "report.md.tmp"), os.path.join(out, "report.md"))


if __name__ == "__main__":
    main()
