// gotr1 box-canvas rasterizer: rectangle outlines, alpha fills and bitmap-font labels drawn into
// caller-owned RGB buffers. Pure C++17, no Python: bindings.cpp checks every buffer and argument
// before anything here runs, and these functions clip every write to the image they are given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gotr1::canvas {

struct Rgb {
    std::uint8_t r, g, b;
};

// Inclusive pixel corners; callers order them (x0 <= x1, y0 <= y1). Any int64 values are safe:
// they are clamped to +-kCoordLimit, far enough out that the clipped result cannot change.
struct Rect {
    std::int64_t x0, y0, x1, y1;
};

constexpr std::int64_t kCoordLimit = std::int64_t{1} << 62;
constexpr std::int64_t kMaxLineWidth = 2147483647;  // PIL's C int
constexpr int kMaxLabelScale = 64;

// A C-contiguous uint8 image [height, width, 3] that the caller owns.
struct ImageView {
    std::uint8_t* data;
    std::int64_t height;
    std::int64_t width;
};

// The pixels PIL's ImageDraw.rectangle(rect, outline=color, width=line_width) colours:
// line_width nested 1-px rings grown inwards, whose rows and columns overshoot the box when
// line_width exceeds it. line_width <= 0 draws nothing.
void draw_outline(ImageView image, Rect rect, std::int64_t line_width, Rgb color);

// Blends color over the inclusive rect: out = (alpha * color + (255 - alpha) * out) / 255, rounded.
void blend_fill(ImageView image, Rect rect, Rgb color, int alpha);

// Width and height in pixels of a label's filled background at the given font scale.
struct LabelSize {
    std::int64_t width, height;
};
LabelSize label_size(const std::string& utf8, int scale);

// Draws utf8 (one glyph per code point; anything but printable ASCII, and each byte of an invalid
// sequence, as a hollow box) on a background filled with `background`, its top-left corner at
// (x, y) moved as little as needed to lie inside the image; text is black or white, whichever
// contrasts more with the background. An empty string draws nothing.
void draw_label(ImageView image, std::int64_t x, std::int64_t y, const std::string& utf8, Rgb background,
                int scale);

struct LayoutStyle {
    std::int64_t line_width = 3;
    int fill_alpha = 0;   // 0 leaves box interiors untouched
    int label_scale = 2;  // font pixels per glyph pixel
    bool labels = true;
    std::uint8_t background = 255;
};

// Boxes of several layouts, flattened: layout i owns entries [offsets[i], offsets[i + 1]).
// labels is empty or holds one UTF-8 string per box.
struct LayoutBatch {
    std::vector<Rect> rects;
    std::vector<Rgb> colors;
    std::vector<std::string> labels;
    std::vector<std::int64_t> offsets;
};

// Renders layout `index` of the batch into image: background, fills, outlines, then labels on top,
// each at its box's top-left corner inside the image, moved down below earlier labels it would cover.
void render_layout(ImageView image, const LayoutBatch& batch, std::size_t index, const LayoutStyle& style);

// Renders every layout of the batch into images [N, height, width, 3] (N = offsets.size() - 1),
// spread over `threads` threads (0: min(N, hardware threads)).
void render_layouts(std::uint8_t* images, std::int64_t height, std::int64_t width, const LayoutBatch& batch,
                    const LayoutStyle& style, int threads);

// The thread count render_layouts uses for n layouts when asked for 0.
int default_threads(std::int64_t n);

}  // namespace gotr1::canvas
