"""What the numbers were measured on: CPU, cores, load, library versions."""
import os
import platform

from runtime.cli import cpu_count, module_versions


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model", "processor") and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value and not value.isdigit():
                        return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


VERSIONED = ("torch", "numpy", "ai_edge_litert", "litert_torch", "onnxruntime", "onnx", "matplotlib")


def describe():
    return {"cpu": _cpu_model(), "arch": platform.machine(), "cores_logical": os.cpu_count(),
            "cores_usable": cpu_count(), "os": "%s %s" % (platform.system(), platform.release()),
            "load_average_start": load_average(), "versions": module_versions(VERSIONED)}
