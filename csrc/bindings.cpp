// pybind11 bindings of the rasterizer: every buffer and argument is checked here, with an error
// naming it, then copied or pinned before the GIL is released and the core in canvas.cpp draws.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "canvas.h"

namespace py = pybind11;
namespace cv = gotr1::canvas;
using namespace pybind11::literals;

namespace {

constexpr const char* kImageLayout = "a numpy.ndarray of uint8 [H, W, 3], C-contiguous and writeable";
constexpr const char* kImagesLayout = "a numpy.ndarray of uint8 [N, H, W, 3], C-contiguous and writeable";
constexpr const char* kBoxesLayout = "a C-contiguous numpy.ndarray of int64 [K, 4] (x0, y0, x1, y1)";
constexpr const char* kColorsLayout = "a C-contiguous numpy.ndarray of uint8 [K, 3]";
constexpr const char* kOffsetsLayout = "a C-contiguous numpy.ndarray of int64 [N + 1]";

std::string describe(const py::handle& obj) { return py::str(py::repr(obj)).cast<std::string>().substr(0, 200); }

std::string shape_of(const py::array& a) { return py::str(a.attr("shape")).cast<std::string>(); }

// obj as an ndarray of T with `ndim` dimensions, C-contiguous (and writeable if asked); the last
// dimension must be `last` unless it is -1. Errors name the argument and the expected layout.
template <typename T>
py::array checked_array(const py::object& obj, const char* name, const char* layout, py::ssize_t ndim,
                        py::ssize_t last, bool writeable) {
    const std::string what = std::string(name) + " must be " + layout;
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(what + ", got " + py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
    }
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!py::array_t<T>::check_(a)) {
        throw py::type_error(what + ", got dtype " + py::str(a.dtype()).cast<std::string>());
    }
    if (a.ndim() != ndim || (last >= 0 && a.shape(ndim - 1) != last)) {
        throw py::value_error(what + ", got shape " + shape_of(a));
    }
    if (!(a.flags() & py::array::c_style)) {
        throw py::value_error(what + ", got a non-contiguous array (use numpy.ascontiguousarray)");
    }
    if (writeable && !a.writeable()) throw py::value_error(what + ", got a read-only array");
    return a;
}

// obj as an integer in [lo, hi]; anything else raises an error naming the argument.
std::int64_t checked_int(const py::object& obj, const char* name, std::int64_t lo, std::int64_t hi) {
    PyObject* index = PyNumber_Index(obj.ptr());
    const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (index == nullptr) {
        PyErr_Clear();
        throw py::type_error(std::string(name) + " must be an int in " + range + ", got " + describe(obj));
    }
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (overflow != 0 || value < lo || value > hi) {
        throw py::value_error(std::string(name) + " must be an int in " + range + ", got " + describe(obj));
    }
    return value;
}

// The [K, 4] boxes as rects, refusing reversed corners as PIL's ImageDraw.rectangle does.
std::vector<cv::Rect> read_boxes(const py::array& boxes) {
    const auto* v = static_cast<const std::int64_t*>(boxes.data());
    std::vector<cv::Rect> rects(static_cast<std::size_t>(boxes.shape(0)));
    for (std::size_t k = 0; k < rects.size(); ++k) {
        const cv::Rect r{v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]};
        if (r.x1 < r.x0 || r.y1 < r.y0) {
            throw py::value_error("boxes[" + std::to_string(k) + "] = (" + std::to_string(r.x0) + ", " +
                                  std::to_string(r.y0) + ", " + std::to_string(r.x1) + ", " + std::to_string(r.y1) +
                                  ") has reversed corners: need x0 <= x1 and y0 <= y1, as PIL does");
        }
        rects[k] = r;
    }
    return rects;
}

std::vector<cv::Rgb> read_colors(const py::array& colors, std::size_t count) {
    if (static_cast<std::size_t>(colors.shape(0)) != count) {
        throw py::value_error("colors must hold one row per box: got shape " + shape_of(colors) + " for " +
                              std::to_string(count) + " boxes");
    }
    const auto* v = static_cast<const std::uint8_t*>(colors.data());
    std::vector<cv::Rgb> rgb(count);
    for (std::size_t k = 0; k < count; ++k) rgb[k] = {v[3 * k], v[3 * k + 1], v[3 * k + 2]};
    return rgb;
}

std::vector<std::int64_t> read_offsets(const py::array& offsets, py::ssize_t layouts, std::size_t boxes) {
    if (offsets.shape(0) != layouts + 1) {
        throw py::value_error("offsets must have N + 1 = " + std::to_string(layouts + 1) + " entries for " +
                              std::to_string(layouts) + " images, got shape " + shape_of(offsets));
    }
    const auto* v = static_cast<const std::int64_t*>(offsets.data());
    std::vector<std::int64_t> out(v, v + layouts + 1);
    bool ordered = out.front() == 0 && out.back() == static_cast<std::int64_t>(boxes);
    for (std::size_t i = 1; ordered && i < out.size(); ++i) ordered = out[i - 1] <= out[i];
    if (!ordered) {
        throw py::value_error("offsets must rise from 0 to the number of boxes (" + std::to_string(boxes) +
                              ") without decreasing, got " + describe(offsets));
    }
    return out;
}

// One UTF-8 string per box; str is encoded with surrogatepass so that lone surrogates reach the
// core as (invalid) bytes and become placeholder glyphs instead of raising.
std::vector<std::string> read_labels(const py::object& labels, std::size_t count) {
    if (labels.is_none()) return {};
    if (!py::isinstance<py::list>(labels) && !py::isinstance<py::tuple>(labels)) {
        throw py::type_error("labels must be None or a list of str or bytes, got " +
                             py::str(py::type::of(labels).attr("__name__")).cast<std::string>());
    }
    const auto items = py::reinterpret_borrow<py::sequence>(labels);
    if (items.size() != count) {
        throw py::value_error("labels must hold one label per box: got " + std::to_string(items.size()) + " for " +
                              std::to_string(count) + " boxes");
    }
    std::vector<std::string> out;
    out.reserve(count);
    for (std::size_t k = 0; k < count; ++k) {
        py::object item = items[k];
        if (py::isinstance<py::str>(item)) item = item.attr("encode")("utf-8", "surrogatepass");
        if (!py::isinstance<py::bytes>(item)) {
            throw py::type_error("labels[" + std::to_string(k) + "] must be str or bytes, got " + describe(item));
        }
        out.push_back(item.cast<std::string>());
    }
    return out;
}

void draw_rectangles(const py::object& canvas, const py::object& boxes, const py::object& colors,
                     const py::object& width) {
    py::array image = checked_array<std::uint8_t>(canvas, "canvas", kImageLayout, 3, 3, true);
    const std::vector<cv::Rect> rects =
        read_boxes(checked_array<std::int64_t>(boxes, "boxes", kBoxesLayout, 2, 4, false));
    const std::vector<cv::Rgb> rgb =
        read_colors(checked_array<std::uint8_t>(colors, "colors", kColorsLayout, 2, 3, false), rects.size());
    const std::int64_t line_width = checked_int(width, "width", 0, cv::kMaxLineWidth);
    const cv::ImageView view{static_cast<std::uint8_t*>(image.mutable_data()), image.shape(0), image.shape(1)};
    py::gil_scoped_release release;
    for (std::size_t k = 0; k < rects.size(); ++k) cv::draw_outline(view, rects[k], line_width, rgb[k]);
}

void render_layouts(const py::object& out, const py::object& boxes, const py::object& colors,
                    const py::object& offsets, const py::object& labels, const py::object& line_width,
                    const py::object& fill_alpha, const py::object& label_scale, const py::object& threads) {
    py::array images = checked_array<std::uint8_t>(out, "out", kImagesLayout, 4, 3, true);
    cv::LayoutBatch batch;
    batch.rects = read_boxes(checked_array<std::int64_t>(boxes, "boxes", kBoxesLayout, 2, 4, false));
    batch.colors =
        read_colors(checked_array<std::uint8_t>(colors, "colors", kColorsLayout, 2, 3, false), batch.rects.size());
    batch.offsets = read_offsets(checked_array<std::int64_t>(offsets, "offsets", kOffsetsLayout, 1, -1, false),
                                 images.shape(0), batch.rects.size());
    batch.labels = read_labels(labels, batch.rects.size());
    cv::LayoutStyle style;
    style.line_width = checked_int(line_width, "line_width", 0, cv::kMaxLineWidth);
    style.fill_alpha = static_cast<int>(checked_int(fill_alpha, "fill_alpha", 0, 255));
    style.label_scale = static_cast<int>(checked_int(label_scale, "label_scale", 1, cv::kMaxLabelScale));
    style.labels = !batch.labels.empty();
    const int thread_count = static_cast<int>(checked_int(threads, "threads", 0, 1024));
    auto* data = static_cast<std::uint8_t*>(images.mutable_data());
    const py::ssize_t height = images.shape(1), width = images.shape(2);
    py::gil_scoped_release release;
    cv::render_layouts(data, height, width, batch, style, thread_count);
}

}  // namespace

PYBIND11_MODULE(_canvas, m) {
    m.doc() = "gotr1 box-canvas rasterizer: PIL-exact rectangle outlines and bitmap-font labels on uint8 RGB canvases";
    m.attr("MAX_LINE_WIDTH") = cv::kMaxLineWidth;
    m.attr("MAX_LABEL_SCALE") = cv::kMaxLabelScale;
    m.def("draw_rectangles", &draw_rectangles, "canvas"_a, "boxes"_a, "colors"_a, "width"_a = 1, R"pbdoc(
Draw rectangle outlines in place, colouring exactly the pixels PIL's
ImageDraw.rectangle([x0, y0, x1, y1], outline=color, width=width) colours.

canvas: uint8 [H, W, 3], C-contiguous, writeable. boxes: int64 [K, 4] inclusive corners with
x0 <= x1 and y0 <= y1 (any int64 values; drawing is clipped). colors: uint8 [K, 3].
width: int in [0, 2**31 - 1]; 0 draws nothing. The GIL is released while drawing.
)pbdoc");
    m.def("render_layouts", &render_layouts, "out"_a, "boxes"_a, "colors"_a, "offsets"_a, "labels"_a,
          "line_width"_a, "fill_alpha"_a, "label_scale"_a, "threads"_a, R"pbdoc(
Render N layouts into out, one per image, on a pool of threads with the GIL released.

out: uint8 [N, H, W, 3], C-contiguous, writeable; each image is filled white, then box fills
(alpha fill_alpha in [0, 255], 0 for none), outlines (line_width, PIL-exact) and labels drawn.
boxes: int64 [K, 4] inclusive corners; colors: uint8 [K, 3]; offsets: int64 [N + 1], layout i
owns boxes offsets[i]:offsets[i + 1]. labels: None, or one str/bytes (UTF-8) per box, drawn at
its box's top-left corner inside the image on a background of the box colour, with the 5x9 font
scaled by label_scale in [1, 64]; non-ASCII as hollow boxes. threads: 0 for min(N, CPUs).
)pbdoc");
}
