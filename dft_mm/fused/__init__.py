"""dft_mm.fused"""
