"""What the benchmark can see of the machine and the server process from outside it.

Linux ``/proc`` first (no dependency), psutil where /proc is missing and psutil is installed,
``nvidia-smi`` for GPU memory when it is on the PATH; anything unavailable is None ("n/a").
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU, OS and Python: enough to tell two runs' machines apart."""
    cpu = platform.processor() or platform.machine()
    if text := _read(PROC / "cpuinfo"):
        names = [ln.split(":", 1)[1].strip() for ln in text.splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    ram_gb = None
    if text := _read(PROC / "meminfo"):
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "gpu": gpu_names(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": load_average(),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def gpu_names() -> list[str] | None:
    out = _nvidia_smi("--query-gpu=name,memory.total", "--format=csv,noheader,nounits")
    if out is None:
        return None
    return [f"{name.strip()} ({int(float(total)) // 1024} GiB)"
            for name, total in (line.split(",", 1) for line in out.splitlines() if "," in line)]


def _nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def gpu_memory() -> list[dict[str, Any]] | None:
    """Each GPU's name and memory used / total (MiB), or None without nvidia-smi (the System
    page: how much room the models leave). Blocks up to nvidia-smi's time: call off the loop."""
    out = _nvidia_smi("--query-gpu=name,memory.used,memory.total",
                      "--format=csv,noheader,nounits")
    if out is None:
        return None
    gpus = []
    for line in out.splitlines():
        try:
            name, used, total = (part.strip() for part in line.rsplit(",", 2))
            gpus.append({"name": name, "used_mb": int(float(used)),
                         "total_mb": int(float(total))})
        except ValueError:
            continue
    return gpus


async def gpu_memory_used_mb() -> float | None:
    """GPU memory in use on all GPUs (MB), or None without nvidia-smi."""
    out = await asyncio.to_thread(
        _nvidia_smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits")
    if out is None:
        return None
    try:
        return sum(float(x) for x in out.split())
    except ValueError:
        return None


def system_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores since boot, from /proc/stat."""
    text = _read(PROC / "stat")
    if not text:
        return None
    values = [int(x) for x in text.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass(slots=True)
class ProcSample:
    cpu_s: float  # user + system CPU seconds since the process started
    rss_mb: float
    hwm_mb: float | None  # the kernel's peak RSS for the process's whole life


def process_sample(pid: int) -> ProcSample | None:
    """CPU time and memory of ``pid`` (all its threads), or None if it cannot be read."""
    stat, status = _read(PROC / str(pid) / "stat"), _read(PROC / str(pid) / "status")
    if stat and status:
        fields = stat.rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        mem = {ln.split(":")[0]: ln.split()[1] for ln in status.splitlines() if ln.startswith("Vm")}
        rss = int(mem.get("VmRSS", 0)) / 1024
        hwm = int(mem["VmHWM"]) / 1024 if "VmHWM" in mem else None
        return ProcSample(cpu_s, rss, hwm)
    try:
        import psutil  # optional: only where /proc is not there
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        times, info = proc.cpu_times(), proc.memory_info()
    except psutil.Error:
        return None
    return ProcSample(times.user + times.system, info.rss / 2**20, None)


@dataclass
class Window:
    """Resource use over one benchmark level, sampled every ``interval_s``."""

    pid: int | None
    interval_s: float = 0.25
    started: float = field(default_factory=time.monotonic)
    first: ProcSample | None = None
    last: ProcSample | None = None
    rss_peak_mb: float | None = None
    gpu_peak_mb: float | None = None
    sys_first: tuple[int, int] | None = None
    sys_last: tuple[int, int] | None = None
    bench_cpu_first: float = field(default_factory=time.process_time)
    bench_cpu_last: float | None = None
    load_start: list[float] | None = field(default_factory=load_average)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.first = self._sample()
        self.sys_first = system_cpu_ticks()
        self._task = asyncio.create_task(self._run(), name="bench-probe")

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.last = self._sample()
        self.sys_last = system_cpu_ticks()
        self.bench_cpu_last = time.process_time()
        return self.result()

    def _sample(self) -> ProcSample | None:
        sample = process_sample(self.pid) if self.pid else None
        if sample is not None:
            self.rss_peak_mb = max(self.rss_peak_mb or 0.0, sample.rss_mb)
        return sample

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.interval_s)
            self._sample()
            if ticks % 4 == 0:  # nvidia-smi is slow-ish: once a second
                used = await gpu_memory_used_mb()
                if used is not None:
                    self.gpu_peak_mb = max(self.gpu_peak_mb or 0.0, used)
            ticks += 1

    def result(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.started, 1e-9)
        server: dict[str, Any] = {"cpu_pct": None, "rss_peak_mb": None, "rss_hwm_mb": None,
                                  "rss_start_mb": None, "rss_end_mb": None}
        if self.first and self.last:
            server["cpu_pct"] = round((self.last.cpu_s - self.first.cpu_s) / wall * 100, 1)
            server["rss_peak_mb"] = round(self.rss_peak_mb or self.last.rss_mb, 1)
            server["rss_start_mb"] = round(self.first.rss_mb, 1)
            server["rss_end_mb"] = round(self.last.rss_mb, 1)
            server["rss_hwm_mb"] = None if self.last.hwm_mb is None else round(self.last.hwm_mb, 1)
        machine_busy = None
        if self.sys_first and self.sys_last and self.sys_last[1] > self.sys_first[1]:
            busy = self.sys_last[0] - self.sys_first[0]
            machine_busy = round(busy / (self.sys_last[1] - self.sys_first[1]) * 100, 1)
        bench_cpu = (self.bench_cpu_last or time.process_time()) - self.bench_cpu_first
        return {
            "server": server,
            "bench_cpu_pct": round(bench_cpu / wall * 100, 1),
            "machine_cpu_busy_pct": machine_busy,  # all cores, every process (others' too)
            "gpu_memory_peak_mb": None if self.gpu_peak_mb is None else round(self.gpu_peak_mb),
            "loadavg_start": self.load_start,
            "loadavg_end": load_average(),
        }
