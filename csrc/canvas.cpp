// gotr1 box-canvas rasterizer: see canvas.h for the contract of each function.
#include "canvas.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <system_error>
#include <thread>

#include "font.h"

namespace gotr1::canvas {
namespace {

constexpr std::int64_t kGlyphAdvance = font::kGlyphWidth + 1;  // one blank column between glyphs
constexpr int kMaxLabelMoves = 16;
constexpr std::size_t kNarrowSpan = 8 * 3;  // bytes; fill_clipped stores pixels directly up to this width

std::int64_t clamp64(std::int64_t v, std::int64_t lo, std::int64_t hi) { return std::min(std::max(v, lo), hi); }

// Far-out coordinates are clamped so that the int64 sums below cannot overflow; every comparison
// that decides a pixel is against [0, 2^31) +- a line width, so the clamp changes no pixel.
Rect clamp_rect(Rect r) {
    return {clamp64(r.x0, -kCoordLimit, kCoordLimit), clamp64(r.y0, -kCoordLimit, kCoordLimit),
            clamp64(r.x1, -kCoordLimit, kCoordLimit), clamp64(r.y1, -kCoordLimit, kCoordLimit)};
}

// Sets `bytes` (a multiple of 3) bytes at dst to RGB pixels of color, by doubling copies of the
// first pixel: a few memcpy calls instead of a 3-byte loop.
void fill_pixels(std::uint8_t* dst, std::size_t bytes, Rgb color) {
    if (bytes < 3) return;
    dst[0] = color.r;
    dst[1] = color.g;
    dst[2] = color.b;
    for (std::size_t done = 3; done < bytes; done *= 2) std::memcpy(dst + done, dst, std::min(done, bytes - done));
}

// Sets the inclusive rect [x0, x1] x [y0, y1], clipped to the image, to color.
void fill_clipped(ImageView image, std::int64_t x0, std::int64_t y0, std::int64_t x1, std::int64_t y1, Rgb color) {
    x0 = std::max<std::int64_t>(x0, 0);
    y0 = std::max<std::int64_t>(y0, 0);
    x1 = std::min(x1, image.width - 1);
    y1 = std::min(y1, image.height - 1);
    if (x0 > x1 || y0 > y1) return;
    const std::size_t row_stride = static_cast<std::size_t>(image.width) * 3;
    const std::size_t span = static_cast<std::size_t>(x1 - x0 + 1) * 3;
    std::uint8_t* first = image.data + static_cast<std::size_t>(y0) * row_stride + static_cast<std::size_t>(x0) * 3;
    if (span <= kNarrowSpan) {
        // Outline sides are a few pixels wide and tall: plain stores beat a memcpy call per row.
        for (std::int64_t y = y0; y <= y1; ++y) {
            std::uint8_t* p = first + static_cast<std::size_t>(y - y0) * row_stride;
            for (std::size_t i = 0; i < span; i += 3) {
                p[i] = color.r;
                p[i + 1] = color.g;
                p[i + 2] = color.b;
            }
        }
        return;
    }
    fill_pixels(first, span, color);
    // Later rows copy the first: a memcpy beats the 3-byte pattern loop.
    for (std::int64_t y = y0 + 1; y <= y1; ++y) {
        std::memcpy(first + static_cast<std::size_t>(y - y0) * row_stride, first, span);
    }
}

// Decodes one UTF-8 sequence starting at s[i]: returns the glyph index and advances i past it.
// Printable ASCII maps to its glyph; everything else, including each byte that does not start a
// well-formed sequence, to the placeholder.
int next_glyph(const std::string& s, std::size_t& i) {
    const auto lead = static_cast<unsigned char>(s[i]);
    if (lead < 0x80) {
        ++i;
        return lead >= font::kFirstPrintable && lead <= font::kLastPrintable ? lead - font::kFirstPrintable
                                                                             : font::kPlaceholder;
    }
    std::size_t length = 1;  // sequence length announced by the lead byte; 1 for a stray byte
    if (lead >= 0xC2 && lead <= 0xDF) length = 2;
    if (lead >= 0xE0 && lead <= 0xEF) length = 3;
    if (lead >= 0xF0 && lead <= 0xF4) length = 4;
    for (std::size_t k = 1; k < length; ++k) {
        if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) {
            length = 1;
            break;
        }
    }
    i += length;
    return font::kPlaceholder;
}

std::int64_t glyph_count(const std::string& s) {
    std::int64_t count = 0;
    for (std::size_t i = 0; i < s.size(); ++count) next_glyph(s, i);
    return count;
}

bool overlap(const Rect& a, const Rect& b) { return a.x0 <= b.x1 && b.x0 <= a.x1 && a.y0 <= b.y1 && b.y0 <= a.y1; }

// Where a label of `size` for `box` goes: the box's top-left corner moved inside the image, then
// moved down below each earlier label it would cover (boxes often share a corner), unless that
// pushes it off the image, in which case it stays at the corner and covers the earlier one.
Rect place_label(ImageView image, const Rect& box, LabelSize size, const std::vector<Rect>& placed) {
    const Rect r = clamp_rect(box);
    const std::int64_t x = std::max<std::int64_t>(0, std::min(r.x0, image.width - size.width));
    const std::int64_t y = std::max<std::int64_t>(0, std::min(r.y0, image.height - size.height));
    const Rect corner{x, y, x + size.width - 1, y + size.height - 1};
    if (size.width == 0) return corner;
    Rect at = corner;
    // Each move goes below one earlier label and y only grows, so this ends; the cap bounds the
    // work at O(kMaxLabelMoves * placed.size()) per label for hostile inputs.
    int moves = 0;
    for (bool moved = true; moved && moves <= kMaxLabelMoves;) {
        moved = false;
        for (const Rect& other : placed) {
            if (!overlap(at, other)) continue;
            at.y0 = other.y1 + 1;
            at.y1 = at.y0 + size.height - 1;
            moved = true;
            ++moves;
        }
    }
    return at.y1 < image.height && moves <= kMaxLabelMoves ? at : corner;
}

}  // namespace

void draw_outline(ImageView image, Rect rect, std::int64_t line_width, Rgb color) {
    if (line_width <= 0) return;
    const std::int64_t w = std::min(line_width, kMaxLineWidth);
    const Rect r = clamp_rect(rect);
    // PIL draws, for i in [0, w): rows y0 + i and y1 - i across [x0, x1], and columns x0 + i and
    // x1 - i as lines from y0 + w towards y1 - w + 1 (end excluded, either direction). Their union:
    fill_clipped(image, r.x0, r.y0, r.x1, r.y0 + w - 1, color);
    fill_clipped(image, r.x0, r.y1 - w + 1, r.x1, r.y1, color);
    const std::int64_t from = r.y0 + w, to = r.y1 - w + 1;
    if (from == to) return;
    const std::int64_t top = from < to ? from : to + 1;
    const std::int64_t bottom = from < to ? to - 1 : from;
    fill_clipped(image, r.x0, top, r.x0 + w - 1, bottom, color);
    fill_clipped(image, r.x1 - w + 1, top, r.x1, bottom, color);
}

void blend_fill(ImageView image, Rect rect, Rgb color, int alpha) {
    alpha = std::min(std::max(alpha, 0), 255);
    if (alpha == 0) return;
    const Rect r = clamp_rect(rect);
    const std::int64_t x0 = std::max<std::int64_t>(r.x0, 0), x1 = std::min(r.x1, image.width - 1);
    const std::int64_t y0 = std::max<std::int64_t>(r.y0, 0), y1 = std::min(r.y1, image.height - 1);
    if (x0 > x1 || y0 > y1) return;  // before any pointer arithmetic: x0 may lie far outside the image
    const unsigned a = static_cast<unsigned>(alpha), keep = 255u - a;
    const unsigned ink[3] = {a * color.r, a * color.g, a * color.b};
    for (std::int64_t y = y0; y <= y1; ++y) {
        std::uint8_t* p = image.data + (static_cast<std::size_t>(y) * static_cast<std::size_t>(image.width) +
                                        static_cast<std::size_t>(x0)) * 3;
        for (std::int64_t x = x0; x <= x1; ++x, p += 3) {
            for (int c = 0; c < 3; ++c) p[c] = static_cast<std::uint8_t>((ink[c] + keep * p[c] + 127u) / 255u);
        }
    }
}

LabelSize label_size(const std::string& utf8, int scale) {
    const std::int64_t n = glyph_count(utf8);
    if (n == 0) return {0, 0};
    const std::int64_t s = std::min(std::max(scale, 1), kMaxLabelScale);
    // One scaled pixel of padding left and on top; the last glyph's blank column pads the right and
    // the descender rows pad the bottom.
    return {(n * kGlyphAdvance + 1) * s, (font::kGlyphHeight + 1) * s};
}

void draw_label(ImageView image, std::int64_t x, std::int64_t y, const std::string& utf8, Rgb background,
                int scale) {
    const LabelSize size = label_size(utf8, scale);
    if (size.width == 0) return;
    const std::int64_t s = std::min(std::max(scale, 1), kMaxLabelScale);
    x = std::max<std::int64_t>(0, std::min(x, image.width - size.width));
    y = std::max<std::int64_t>(0, std::min(y, image.height - size.height));
    const std::int64_t x1 = std::min(x + size.width, image.width), y1 = std::min(y + size.height, image.height);
    if (x >= x1 || y >= y1) return;
    // ITU-R BT.601 luma: dark text on light backgrounds, light text on dark ones.
    const int luma = (299 * background.r + 587 * background.g + 114 * background.b) / 1000;
    const Rgb text = luma >= 140 ? Rgb{0, 0, 0} : Rgb{255, 255, 255};
    // Only the glyphs that start inside the image are decoded; a long label is cut at the edge.
    std::vector<int> glyphs;
    for (std::size_t i = 0; i < utf8.size(); glyphs.push_back(next_glyph(utf8, i))) {
        if (x + (static_cast<std::int64_t>(glyphs.size()) * kGlyphAdvance + 1) * s >= x1) break;
    }
    // The label is bands of s identical rows (padding, then the glyph rows): each band's row is
    // built once in `line` and copied s times, which is much cheaper than drawing pixel blocks.
    std::vector<std::uint8_t> line(static_cast<std::size_t>(x1 - x) * 3);
    const std::size_t row_stride = static_cast<std::size_t>(image.width) * 3;
    for (int band = 0; band < font::kGlyphHeight + 1; ++band) {
        const std::int64_t top = y + band * s;
        if (top >= y1) break;
        fill_pixels(line.data(), line.size(), background);
        const int row = band - 1;
        for (std::size_t g = 0; row >= 0 && g < glyphs.size(); ++g) {
            const unsigned bits = font::kGlyphs[glyphs[g]][row];
            for (int col = 0; col < font::kGlyphWidth; ++col) {
                if (!(bits & (1u << (font::kGlyphWidth - 1 - col)))) continue;
                const std::int64_t left = s + (static_cast<std::int64_t>(g) * kGlyphAdvance + col) * s;
                for (std::int64_t px = left; px < std::min(left + s, x1 - x); ++px) {
                    std::uint8_t* p = &line[static_cast<std::size_t>(px) * 3];
                    p[0] = text.r;
                    p[1] = text.g;
                    p[2] = text.b;
                }
            }
        }
        for (std::int64_t yy = top; yy < std::min(top + s, y1); ++yy) {
            std::memcpy(image.data + static_cast<std::size_t>(yy) * row_stride + static_cast<std::size_t>(x) * 3,
                        line.data(), line.size());
        }
    }
}

void render_layout(ImageView image, const LayoutBatch& batch, std::size_t index, const LayoutStyle& style) {
    const std::size_t bytes = static_cast<std::size_t>(image.height) * static_cast<std::size_t>(image.width) * 3;
    if (bytes > 0) std::memset(image.data, style.background, bytes);
    const auto begin = static_cast<std::size_t>(batch.offsets[index]);
    const auto end = static_cast<std::size_t>(batch.offsets[index + 1]);
    for (std::size_t k = begin; k < end; ++k) blend_fill(image, batch.rects[k], batch.colors[k], style.fill_alpha);
    for (std::size_t k = begin; k < end; ++k) draw_outline(image, batch.rects[k], style.line_width, batch.colors[k]);
    if (!style.labels || batch.labels.empty()) return;
    // Labels last, so that no later box's outline crosses an earlier box's name.
    std::vector<Rect> placed;
    placed.reserve(end - begin);
    for (std::size_t k = begin; k < end; ++k) {
        const Rect at = place_label(image, batch.rects[k], label_size(batch.labels[k], style.label_scale), placed);
        draw_label(image, at.x0, at.y0, batch.labels[k], batch.colors[k], style.label_scale);
        placed.push_back(at);
    }
}

int default_threads(std::int64_t n) {
    const std::int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
    return static_cast<int>(std::max<std::int64_t>(1, std::min(n, hardware)));
}

void render_layouts(std::uint8_t* images, std::int64_t height, std::int64_t width, const LayoutBatch& batch,
                    const LayoutStyle& style, int threads) {
    if (batch.offsets.size() < 2) return;
    const auto n = static_cast<std::int64_t>(batch.offsets.size() - 1);
    const std::size_t image_bytes = static_cast<std::size_t>(height) * static_cast<std::size_t>(width) * 3;
    std::atomic<std::int64_t> next{0};
    // Workers pull layouts one at a time, so a few heavy layouts do not leave a thread idle.
    auto work = [&] {
        for (std::int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
            render_layout({images + static_cast<std::size_t>(i) * image_bytes, height, width}, batch,
                          static_cast<std::size_t>(i), style);
        }
    };
    const std::int64_t wanted = threads <= 0 ? default_threads(n) : std::min<std::int64_t>(threads, n);
    std::vector<std::thread> helpers;
    helpers.reserve(static_cast<std::size_t>(wanted - 1));
    try {
        for (std::int64_t t = 1; t < wanted; ++t) helpers.emplace_back(work);
    } catch (const std::system_error&) {
        // Could not start another thread: those already running and this one share the rest.
    }
    work();
    for (std::thread& helper : helpers) helper.join();
}

}  // namespace gotr1::canvas
