"""What the stages measure: accuracy under attack (`attack`), denoising (`denoise`), embeddings of
clean vs adversarial features (`embed`, `projection`), the robustness evaluation (`robustness`), the
reconstruction-error detector (`detector`), certification (`certify`) and the verdicts.
"""
