"""What the numbers were measured on: CPU, cores, load, library versions."""
import os
import platform


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


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "ai-edge-litert", "litert-torch", "onnxruntime", "onnx", "matplotlib"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def describe():
    return {"cpu": _cpu_model(), "arch": platform.machine(), "cores_logical": os.cpu_count(),
            "cores_usable": usable_cores(), "os": "%s %s" % (platform.system(), platform.release()),
            "load_average_start": load_average(), "versions": versions()}
