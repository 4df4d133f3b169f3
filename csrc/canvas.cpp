// placeholder translation unit; the rasterizer lands here
