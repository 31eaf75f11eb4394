"""Export: a merged fine-tuned model (RUN_DIR/merged from train/) to one checked GGUF file.

GPU-box side, installed with the `[export]` extra. Modules, one job each:
  convert   HF dir -> GGUF f16 (llama.cpp's converter) -> quantized (llama.cpp's quantizer)
  metadata  the provenance record from train/, the annotator.* keys written, the read-back
  drift     the quantized file vs the merged model vs the human labels (Krippendorff's alpha)
  report    the report next to the file (JSON and a table)
  pipeline  one export, in order, with the accept/reject decision
  cli       `annotator export` (main(args))
  calibrated          what `train` does last: the adapter and the base, each with a head
  calibrated_compare  which of the two to ship, and the lines that say so
"""
