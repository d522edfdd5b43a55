"""dft_mm.evaluation.vlm"""
