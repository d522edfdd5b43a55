"""dft_mm.analysis"""
