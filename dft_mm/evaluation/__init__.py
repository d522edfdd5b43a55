"""dft_mm.evaluation"""
