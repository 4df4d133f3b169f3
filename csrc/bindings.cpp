#include <pybind11/pybind11.h>
PYBIND11_MODULE(_canvas, m) { m.doc() = "gotr1 box-canvas rasterizer"; }
