"""UCE: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024)."""
