// The translation unit that builds the shared precompiled LibTorch header (cmake/MugvTorchPch.cmake).
// It defines nothing: the header is its only product.
