"""portcheck: verify a PyTorch -> PaddlePaddle port of any network, layer by layer, against a float64 truth.

Framework-neutral: imports numpy, and torch / paddle only inside the functions that need them; imports no other
package of this project (conr_common and convert may import it).
"""
