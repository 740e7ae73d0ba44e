"""Inputs made in code that the tests and the benchmarks share: hostile image files ([`hostile_images`]), endpoint
requests with the photos they carry ([`requests`]) and object detectors built from a config ([`detectors`]). Not
installed with the package."""
