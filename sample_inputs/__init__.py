"""Inputs made in code that the tests and the benchmarks share: hostile image files ([`hostile_images`]) and
endpoint requests with the photos they carry ([`requests`]). Not installed with the package."""
