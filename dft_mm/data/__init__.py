"""dft_mm.data"""
