"""dft_mm.evaluation.code"""
