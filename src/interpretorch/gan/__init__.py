"""GAN Dissection (Bau et al. 2019): what a generator's units draw, and what happens when they are switched off
or on.

``shipped_pair()`` gives the small DCGAN and segmenter trained by ``python -m interpretorch.gan.train``;
``dissect_generator`` labels each unit of some layers by IoU with the segmented concepts (tally.csv in the
dissection format via ``interpretorch.dissect.write_tally``); ``intervene`` ablates a concept's top units,
random units and another concept's units, and inserts the top units in a region; ``write_gan_report`` writes
the HTML report.
"""
from interpretorch.gan.dissect import GANDissection, default_layers, dissect_generator, sample_z, segment
from interpretorch.gan.intervene import Ablation, ConceptInterventions, Insertion, generate, intervene
from interpretorch.gan.models import (CONCEPTS, Discriminator, GANPair, Generator, Segmenter, load_generator,
                                      load_segmenter, shipped_pair)
from interpretorch.gan.report import write_gan_report, write_interventions

__all__ = ["GANDissection", "default_layers", "dissect_generator", "sample_z", "segment", "Ablation",
           "ConceptInterventions", "Insertion", "generate", "intervene", "CONCEPTS", "Discriminator", "GANPair",
           "Generator", "Segmenter", "load_generator", "load_segmenter", "shipped_pair", "write_gan_report",
           "write_interventions"]
